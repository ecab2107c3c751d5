# agent.cmake - host (Linux) build of the agent layer, include()d by agent_fw/host.
#
#   fleet_agent        portable core: config document, OTA manifest/image checks,
#                      OTA state machine, boot-slot choice (mbedTLS + cJSON)
#   fleet_agent_posix  the Linux ports: file-backed OTA slots + otadata, file kv
#                      store, libcurl HTTP with Range, clock, stderr log, the
#                      OTA worker thread
#   fleet_agent_runtime        the agent runtime (src/agent*.c): MQTT reporting and
#                              commands over one USB/IP core; needs the usbip_core
#                              headers, the final link brings usbip_core itself
#   fleet_agent_runtime_posix  its Linux ports: libmosquitto client, mDNS responder,
#                              simulated system info
#
# Debian packages: libmbedtls-dev, libcjson-dev, libcurl4-openssl-dev, libmosquitto-dev.
# The ESP-IDF build uses the components mbedtls and json instead.

if(TARGET fleet_agent)
  return() # already included (host CMake and the agent tests both may)
endif()

set(FLEET_AGENT_DIR ${CMAKE_CURRENT_LIST_DIR})
set(FLEET_AGENT_POSIX_DIR ${CMAKE_CURRENT_LIST_DIR}/../usbip_posix/src/agent)

find_package(PkgConfig REQUIRED)
pkg_check_modules(FLEET_CJSON REQUIRED IMPORTED_TARGET libcjson)
pkg_check_modules(FLEET_CURL REQUIRED IMPORTED_TARGET libcurl)
find_library(FLEET_MBEDCRYPTO mbedcrypto)
if(NOT FLEET_MBEDCRYPTO)
  message(FATAL_ERROR "fleet_agent needs mbedTLS: apt-get install libmbedtls-dev")
endif()

file(GLOB FLEET_AGENT_SRCS CONFIGURE_DEPENDS ${FLEET_AGENT_DIR}/src/*.c)
file(GLOB FLEET_AGENT_RUNTIME_SRCS CONFIGURE_DEPENDS ${FLEET_AGENT_DIR}/src/agent*.c)
if(FLEET_AGENT_RUNTIME_SRCS)
  list(REMOVE_ITEM FLEET_AGENT_SRCS ${FLEET_AGENT_RUNTIME_SRCS})
endif()
add_library(fleet_agent STATIC ${FLEET_AGENT_SRCS})
target_include_directories(fleet_agent PUBLIC ${FLEET_AGENT_DIR}/include
                           PRIVATE ${FLEET_AGENT_DIR}/src)
# cJSON is included as "cJSON.h" (ESP-IDF's json component spelling).
target_link_libraries(fleet_agent PUBLIC PkgConfig::FLEET_CJSON ${FLEET_MBEDCRYPTO})
set_target_properties(fleet_agent PROPERTIES C_STANDARD 11 C_STANDARD_REQUIRED ON C_EXTENSIONS OFF)

file(GLOB FLEET_AGENT_POSIX_SRCS CONFIGURE_DEPENDS ${FLEET_AGENT_POSIX_DIR}/*.c)
file(GLOB FLEET_AGENT_RUNTIME_POSIX_SRCS CONFIGURE_DEPENDS ${FLEET_AGENT_POSIX_DIR}/mqtt_*.c
     ${FLEET_AGENT_POSIX_DIR}/mdns_*.c ${FLEET_AGENT_POSIX_DIR}/sysinfo_*.c)
list(REMOVE_ITEM FLEET_AGENT_POSIX_SRCS ${FLEET_AGENT_RUNTIME_POSIX_SRCS})
add_library(fleet_agent_posix STATIC ${FLEET_AGENT_POSIX_SRCS})
target_include_directories(fleet_agent_posix PUBLIC ${FLEET_AGENT_POSIX_DIR})
target_compile_definitions(fleet_agent_posix PRIVATE _GNU_SOURCE)
find_package(Threads REQUIRED) # the worker port's OTA thread
target_link_libraries(fleet_agent_posix PUBLIC fleet_agent PkgConfig::FLEET_CURL Threads::Threads)
set_target_properties(fleet_agent_posix PROPERTIES C_STANDARD 11 C_STANDARD_REQUIRED ON C_EXTENSIONS OFF)

# The agent runtime. The usbip_core headers only: fleet-dongle links the core,
# the agent unit tests link the core's instrumented build with its fakes.
add_library(fleet_agent_runtime STATIC ${FLEET_AGENT_RUNTIME_SRCS})
target_include_directories(fleet_agent_runtime PUBLIC ${FLEET_AGENT_DIR}/include
                           ${FLEET_AGENT_DIR}/../usbip_core/include
                           PRIVATE ${FLEET_AGENT_DIR}/src)
target_link_libraries(fleet_agent_runtime PUBLIC fleet_agent m)
set_target_properties(fleet_agent_runtime PROPERTIES C_STANDARD 11 C_STANDARD_REQUIRED ON C_EXTENSIONS OFF)

pkg_check_modules(FLEET_MOSQ REQUIRED IMPORTED_TARGET libmosquitto)
add_library(fleet_agent_runtime_posix STATIC ${FLEET_AGENT_RUNTIME_POSIX_SRCS})
target_include_directories(fleet_agent_runtime_posix PUBLIC ${FLEET_AGENT_POSIX_DIR})
target_compile_definitions(fleet_agent_runtime_posix PRIVATE _GNU_SOURCE)
target_link_libraries(fleet_agent_runtime_posix PUBLIC fleet_agent_runtime fleet_agent_posix PkgConfig::FLEET_MOSQ)
set_target_properties(fleet_agent_runtime_posix PROPERTIES C_STANDARD 11 C_STANDARD_REQUIRED ON C_EXTENSIONS OFF)

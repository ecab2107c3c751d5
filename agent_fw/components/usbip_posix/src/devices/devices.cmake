# Virtual USB device models of the simulated dongle (posix port only).
# Included by agent_fw/host/CMakeLists.txt; defines the static library
# vdev_models. Public header: include/vdev/vdev.h.
set(VDEV_MODELS_DIR ${CMAKE_CURRENT_LIST_DIR})
add_library(vdev_models STATIC
    ${VDEV_MODELS_DIR}/spec.c
    ${VDEV_MODELS_DIR}/base.c
    ${VDEV_MODELS_DIR}/desc.c
    ${VDEV_MODELS_DIR}/msc.c
    ${VDEV_MODELS_DIR}/scsi.c
    ${VDEV_MODELS_DIR}/msc_store.c
    ${VDEV_MODELS_DIR}/hid_keyboard.c
    ${VDEV_MODELS_DIR}/cdc_acm.c
    ${VDEV_MODELS_DIR}/probe.c
    ${VDEV_MODELS_DIR}/hub.c
)
target_include_directories(vdev_models PUBLIC ${VDEV_MODELS_DIR}/../../include)
set_target_properties(vdev_models PROPERTIES C_STANDARD 11 C_STANDARD_REQUIRED ON C_EXTENSIONS OFF)

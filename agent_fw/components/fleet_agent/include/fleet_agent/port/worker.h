/*
 * port/worker.h - run one long job (an OTA download) off the owner's task.
 *
 * The agent hands the download to the worker so that telemetry, the MQTT
 * keepalive and the USB/IP core carry on while it runs, as the esp32 agent
 * runs OTA in a FreeRTOS task of its own. The port decides how the job and
 * the owner share the agent: it must make sure they never touch it at the
 * same time (the posix port: one process-wide lock that the job holds while
 * it runs agent code and drops while it waits for the network).
 *
 * esp32: xTaskCreate + a mutex; posix: a pthread and the big lock.
 */
#ifndef FLEET_AGENT_PORT_WORKER_H
#define FLEET_AGENT_PORT_WORKER_H

typedef struct {
    /* Run fn(arg) on another task. FLEET_OK, or an error and fn never runs.
     * The agent starts at most one job at a time and joins it before the next. */
    int (*start)(void *ctx, void (*fn)(void *arg), void *arg);
    /* Wait until the job started last has returned (at once if it has). Called
     * by the owner's task, which the job may need meanwhile: the port lets
     * the job make progress while the owner waits (e.g. releases the lock). */
    void (*join)(void *ctx);
} fleet_worker_ops_t;

#endif /* FLEET_AGENT_PORT_WORKER_H */

/*
 * scsi.h - the SCSI block device behind the Bulk-Only Transport (one LUN).
 *
 * scsi_plan() decodes a CDB into what the device intends to do (direction
 * and byte count of the data phase, or a CHECK CONDITION with sense data);
 * the BOT layer (msc.c) then reconciles that intent with what the host's
 * CBW asked for (BOT 1.0 section 6.7, the thirteen cases) and moves the
 * data packet by packet through scsi_read_data / scsi_write_data, so a
 * large READ streams from the backing store without being buffered.
 */
#ifndef VDEV_SCSI_H
#define VDEV_SCSI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msc_store.h"

#define SCSI_BLOCK 512u

/* Sense keys / additional sense codes we report. */
enum {
    SENSE_NO_SENSE = 0x00,
    SENSE_MEDIUM_ERROR = 0x03,
    SENSE_ILLEGAL_REQUEST = 0x05,
    SENSE_DATA_PROTECT = 0x07,
};

typedef struct {
    uint8_t key, asc, ascq;
} scsi_sense_t;

typedef enum { SCSI_DIR_NONE, SCSI_DIR_IN, SCSI_DIR_OUT } scsi_dir_t;

typedef struct {
    scsi_dir_t dir;
    uint32_t length;       /* device intent, bytes (0 when dir == NONE) */
    bool failed;           /* CHECK CONDITION: sense is set, no data phase */
    bool from_store;       /* IN: READ streams from the store; OUT: WRITE streams to it */
    uint64_t offset;       /* byte offset in the store for READ / WRITE */
    uint8_t buf[256];      /* response of the other IN commands */
} scsi_plan_t;

typedef struct {
    msc_store_t *store;
    uint64_t blocks;
    bool readonly;
    const char *serial;
    scsi_sense_t sense;
    bool prevent_removal;
    bool stopped;
    /* counters */
    uint64_t commands[256];  /* by opcode */
    uint64_t check_conditions;
    uint64_t bytes_read, bytes_written;
} scsi_lun_t;

void scsi_plan(scsi_lun_t *lun, const uint8_t *cdb, uint8_t cdb_len, scsi_plan_t *plan);

/* Data phase of a from_store plan. `pos` is the byte position within the
 * phase. On I/O error the plan turns into a failure with medium-error sense. */
void scsi_read_data(scsi_lun_t *lun, scsi_plan_t *plan, uint32_t pos, uint8_t *buf, size_t len);
void scsi_write_data(scsi_lun_t *lun, scsi_plan_t *plan, uint32_t pos, const uint8_t *buf,
                     size_t len);

#endif /* VDEV_SCSI_H */

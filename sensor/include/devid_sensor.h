/*
 * devid_sensor.h: the sensor side of DEVID-S1 for C firmware (static library
 * libdevid_sensor_c.a, built by the devid-sensor-c crate).
 *
 * DEVID-S1 (docs/protocol.md, "DEVID-S1: sensors behind gateways"): a sensor derives K_mac and
 * K_enc from its 32-byte key K and its ClientID, numbers each reading with a counter it
 * persists before use, and either MACs the reading (devid-sensor-mac) or seals it with
 * AES-256-GCM (devid-sensor-seal = 1). The gateway relays it; the broker checks it.
 *
 * Every function returns DEVID_SENSOR_OK (0) or an error code, allocates nothing, keeps no
 * pointer after it returns, and is safe to call from several threads on distinct buffers.
 * A pointer may be NULL only when its length is 0; fixed-size arrays are never NULL.
 */
#ifndef DEVID_SENSOR_H
#define DEVID_SENSOR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DEVID_SENSOR_KEY_LEN 32      /* K, K_mac, K_enc */
#define DEVID_SENSOR_MAC_LEN 16      /* the truncated publish MAC */
#define DEVID_SENSOR_TAG_LEN 16      /* AES-GCM tag after a sealed reading */
#define DEVID_SENSOR_B64_LEN 22      /* base64url of the MAC, without the NUL */
#define DEVID_SENSOR_SEQ_TEXT_MAX 20 /* decimal digits of the largest seq, without the NUL */
#define DEVID_SENSOR_ID_MAX 255      /* longest sensor id (ClientIDs have at most 23) */

#define DEVID_SENSOR_OK 0
#define DEVID_SENSOR_ERR_BAD_ID 1            /* id empty or over 255 bytes */
#define DEVID_SENSOR_ERR_BAD_TOPIC 2         /* topic over 65535 bytes (seal: id + topic over 304) */
#define DEVID_SENSOR_ERR_BAD_SEQ 3           /* seq 0, or text not 1..2^64-1 in canonical decimal */
#define DEVID_SENSOR_ERR_BAD_MAC 4
#define DEVID_SENSOR_ERR_BAD_SEAL 5          /* the sealed payload does not open */
#define DEVID_SENSOR_ERR_REPLAYED 6
#define DEVID_SENSOR_ERR_TOO_OLD 7
#define DEVID_SENSOR_ERR_BUFFER_TOO_SMALL 8
#define DEVID_SENSOR_ERR_BAD_BASE64 9
#define DEVID_SENSOR_ERR_PERSIST_FIRST 10    /* persist devid_sensor_counter_to_persist() first */
#define DEVID_SENSOR_ERR_COUNTER_EXHAUSTED 11
#define DEVID_SENSOR_ERR_BAD_FRAME 12
#define DEVID_SENSOR_ERR_NULL 100            /* a required pointer was NULL */
#define DEVID_SENSOR_ERR_INTERNAL 101        /* a bug in the library; nothing was written */

/* The sensor's message counter. Keep it in RAM; persist what
 * devid_sensor_counter_to_persist() asks for. The fields are private. */
typedef struct {
    uint64_t opaque_[3];
} devid_sensor_counter;

/* K_mac and K_enc (32 bytes each) of sensor `id` (its ClientID in ASCII) from its key k. */
int devid_sensor_derive(const uint8_t k[DEVID_SENSOR_KEY_LEN],
                        const uint8_t *id, size_t id_len,
                        uint8_t k_mac[DEVID_SENSOR_KEY_LEN],
                        uint8_t k_enc[DEVID_SENSOR_KEY_LEN]);

/* The 16-byte publish MAC of a reading published as `payload` on `topic` with `seq` (>= 1). */
int devid_sensor_publish_mac(const uint8_t k_mac[DEVID_SENSOR_KEY_LEN],
                             const uint8_t *id, size_t id_len,
                             uint64_t seq,
                             const uint8_t *topic, size_t topic_len,
                             const uint8_t *payload, size_t payload_len,
                             uint8_t mac_out[DEVID_SENSOR_MAC_LEN]);

/* The devid-sensor-mac property value: 22 base64url characters and a NUL (23 bytes). */
int devid_sensor_encode_b64url(const uint8_t mac[DEVID_SENSOR_MAC_LEN],
                               char out_text[DEVID_SENSOR_B64_LEN + 1]);

/* Seals buf[0..plain_len) in place: on success buf[0..*sealed_len) is the ciphertext followed
 * by the 16-byte tag (*sealed_len = plain_len + 16 <= buf_len). */
int devid_sensor_seal(const uint8_t k_enc[DEVID_SENSOR_KEY_LEN],
                      const uint8_t *id, size_t id_len,
                      uint64_t seq,
                      const uint8_t *topic, size_t topic_len,
                      uint8_t *buf, size_t buf_len, size_t plain_len,
                      size_t *sealed_len);

/* Opens a sealed payload in place: on success sealed[0..*plain_len) is the reading. On
 * DEVID_SENSOR_ERR_BAD_SEAL the ciphertext has been overwritten. */
int devid_sensor_open(const uint8_t k_enc[DEVID_SENSOR_KEY_LEN],
                      const uint8_t *id, size_t id_len,
                      uint64_t seq,
                      const uint8_t *topic, size_t topic_len,
                      uint8_t *sealed, size_t sealed_len,
                      size_t *plain_len);

/* seq in decimal (the devid-sensor-seq value) and a NUL; *text_len = number of digits. */
int devid_sensor_format_seq(uint64_t seq, char out_text[DEVID_SENSOR_SEQ_TEXT_MAX + 1],
                            size_t *text_len);

/* Parses a devid-sensor-seq value: digits only, no sign, no leading zero, 1 <= seq < 2^64. */
int devid_sensor_parse_seq(const char *text, size_t text_len, uint64_t *seq);

/* The counter after a (re)start: `persisted` is the value last persisted (0 if none ever
 * was), `block` (>= 1) how far ahead each persisted limit reaches. */
int devid_sensor_counter_resume(devid_sensor_counter *counter, uint64_t persisted,
                                uint64_t block);

/* *value = the limit to persist before the next seq may be used, or 0 when none is needed. */
int devid_sensor_counter_to_persist(const devid_sensor_counter *counter, uint64_t *value);

/* Tells the counter that `value` is now durably stored. */
int devid_sensor_counter_persisted(devid_sensor_counter *counter, uint64_t value);

/* *seq = the next seq; DEVID_SENSOR_ERR_PERSIST_FIRST when no persisted limit covers it. */
int devid_sensor_counter_next(devid_sensor_counter *counter, uint64_t *seq);

/* The topic of a channel, devices/<id>/<channel>, into out_topic (no NUL);
 * *topic_len = its length. This is the topic the MAC or seal covers. */
int devid_sensor_channel_topic(const uint8_t *id, size_t id_len,
                               const uint8_t *channel, size_t channel_len,
                               uint8_t *out_topic, size_t out_len, size_t *topic_len);

/* Encodes one reading as a link frame (docs/protocol.md, "Sensor-to-gateway frames"):
 * COBS(body || CRC-32) followed by 0x00, into out_frame; *frame_len = its length.
 * The sensor is named by `id` (1..23 of [0-9A-Za-z]), or by `index` when id is NULL.
 * `dest` is a channel, or the full topic when dest_is_topic is non-zero.
 * `mac` is the 16-byte publish MAC for a MAC reading, or NULL when `payload` is sealed
 * (ciphertext || tag). `scratch` holds the unencoded body: at least 32 + id_len + dest_len +
 * payload_len bytes; out_frame needs that plus 1 per 254 bytes plus 2. */
int devid_sensor_frame_encode(const uint8_t *id, size_t id_len, uint8_t index,
                              uint64_t seq,
                              const uint8_t *dest, size_t dest_len, int dest_is_topic,
                              const uint8_t *payload, size_t payload_len,
                              const uint8_t *mac,
                              uint8_t *scratch, size_t scratch_len,
                              uint8_t *out_frame, size_t out_len, size_t *frame_len);

/* The name of a DEVID_SENSOR_* code, e.g. "bad_mac" (static, NUL-terminated). */
const char *devid_sensor_error_name(int code);

#ifdef __cplusplus
}
#endif

#endif /* DEVID_SENSOR_H */

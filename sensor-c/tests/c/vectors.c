/* Checks the C library against the DEVID-S1 test vector of docs/protocol.md. Prints one line
 * per check and exits 0 only if every check passed. */
#include <stdio.h>
#include <string.h>

#include "devid_sensor.h"

static int failures = 0;

static void check(int ok, const char *what) {
    printf("%s %s\n", ok ? "ok" : "FAIL", what);
    if (!ok) failures++;
}

static void hex(const char *text, uint8_t *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(text + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

int main(void) {
    static const char *ID = "TMP0A1B2C3D4E5F6G7H8J9K";
    static const char *TOPIC = "devices/TMP0A1B2C3D4E5F6G7H8J9K/temp";
    const size_t id_len = strlen(ID), topic_len = strlen(TOPIC);
    uint8_t k[32], want_mac_key[32], want_enc_key[32], want_sealed[26];
    hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", k, 32);
    hex("1e0aea8ecc43911ccf50cd23ba031b6c44751b1ab2a50b5939ba8f7cac879190", want_mac_key, 32);
    hex("24920a7cc77c721bae3a7a50768515909e73a5197244d9843c6f3b5e97ce782b", want_enc_key, 32);
    hex("db0a9152e81dc4506636a4c312f3e99db734d3ed16708d607b1f", want_sealed, 26);

    uint8_t k_mac[32], k_enc[32];
    check(devid_sensor_derive(k, (const uint8_t *)ID, id_len, k_mac, k_enc) == DEVID_SENSOR_OK,
          "derive");
    check(memcmp(k_mac, want_mac_key, 32) == 0, "K_mac");
    check(memcmp(k_enc, want_enc_key, 32) == 0, "K_enc");

    const char *payload = "{\"t\":21.5}";
    uint8_t mac[16];
    char text[DEVID_SENSOR_B64_LEN + 1];
    check(devid_sensor_publish_mac(k_mac, (const uint8_t *)ID, id_len, 1, (const uint8_t *)TOPIC,
                                   topic_len, (const uint8_t *)payload, strlen(payload),
                                   mac) == DEVID_SENSOR_OK,
          "publish_mac");
    check(devid_sensor_encode_b64url(mac, text) == DEVID_SENSOR_OK &&
              strcmp(text, "lBN_f0v27Tmhua2imcmy-A") == 0,
          "devid-sensor-mac");

    uint8_t buf[64];
    size_t sealed_len = 0, plain_len = 0;
    memcpy(buf, "{\"t\":21.6}", 10);
    check(devid_sensor_seal(k_enc, (const uint8_t *)ID, id_len, 2, (const uint8_t *)TOPIC,
                            topic_len, buf, sizeof buf, 10, &sealed_len) == DEVID_SENSOR_OK &&
              sealed_len == 26 && memcmp(buf, want_sealed, 26) == 0,
          "sealed payload");
    check(devid_sensor_open(k_enc, (const uint8_t *)ID, id_len, 2, (const uint8_t *)TOPIC,
                            topic_len, buf, sealed_len, &plain_len) == DEVID_SENSOR_OK &&
              plain_len == 10 && memcmp(buf, "{\"t\":21.6}", 10) == 0,
          "open");
    memcpy(buf, want_sealed, 26);
    buf[3] ^= 1;
    check(devid_sensor_open(k_enc, (const uint8_t *)ID, id_len, 2, (const uint8_t *)TOPIC,
                            topic_len, buf, 26, &plain_len) == DEVID_SENSOR_ERR_BAD_SEAL,
          "altered seal refused");
    check(devid_sensor_seal(k_enc, (const uint8_t *)ID, id_len, 2, (const uint8_t *)TOPIC,
                            topic_len, buf, 25, 10, &sealed_len) ==
              DEVID_SENSOR_ERR_BUFFER_TOO_SMALL,
          "no room for the tag");

    char seq_text[DEVID_SENSOR_SEQ_TEXT_MAX + 1];
    size_t seq_len = 0;
    uint64_t seq = 0;
    check(devid_sensor_format_seq(UINT64_MAX, seq_text, &seq_len) == DEVID_SENSOR_OK &&
              seq_len == 20 && strcmp(seq_text, "18446744073709551615") == 0,
          "format_seq");
    check(devid_sensor_parse_seq("42", 2, &seq) == DEVID_SENSOR_OK && seq == 42, "parse_seq");
    check(devid_sensor_parse_seq("042", 3, &seq) == DEVID_SENSOR_ERR_BAD_SEQ,
          "leading zero refused");

    devid_sensor_counter counter;
    uint64_t limit = 0;
    check(devid_sensor_counter_resume(&counter, 0, 2) == DEVID_SENSOR_OK, "counter_resume");
    check(devid_sensor_counter_next(&counter, &seq) == DEVID_SENSOR_ERR_PERSIST_FIRST,
          "persist before use");
    check(devid_sensor_counter_to_persist(&counter, &limit) == DEVID_SENSOR_OK && limit == 2,
          "limit to persist");
    devid_sensor_counter_persisted(&counter, limit);
    check(devid_sensor_counter_next(&counter, &seq) == DEVID_SENSOR_OK && seq == 1, "seq 1");
    check(devid_sensor_counter_next(&counter, &seq) == DEVID_SENSOR_OK && seq == 2, "seq 2");
    check(devid_sensor_counter_next(&counter, &seq) == DEVID_SENSOR_ERR_PERSIST_FIRST,
          "block used up");

    uint8_t topic_buf[64], scratch[128], frame[160];
    size_t tlen = 0, flen = 0;
    check(devid_sensor_channel_topic((const uint8_t *)ID, id_len, (const uint8_t *)"temp", 4,
                                     topic_buf, sizeof topic_buf, &tlen) == DEVID_SENSOR_OK &&
              tlen == topic_len && memcmp(topic_buf, TOPIC, tlen) == 0,
          "channel topic");
    check(devid_sensor_frame_encode((const uint8_t *)ID, id_len, 0, 1, (const uint8_t *)"temp", 4,
                                    0, (const uint8_t *)payload, strlen(payload), mac, scratch,
                                    sizeof scratch, frame, sizeof frame,
                                    &flen) == DEVID_SENSOR_OK &&
              flen > 0 && frame[flen - 1] == 0,
          "frame_encode");
    printf("frame ");
    for (size_t i = 0; i < flen; i++) printf("%02x", frame[i]);
    printf("\n");
    check(devid_sensor_frame_encode((const uint8_t *)ID, id_len, 0, 1, (const uint8_t *)"a/b", 3,
                                    0, (const uint8_t *)payload, strlen(payload), mac, scratch,
                                    sizeof scratch, frame, sizeof frame,
                                    &flen) == DEVID_SENSOR_ERR_BAD_FRAME,
          "bad channel refused");

    check(devid_sensor_derive(NULL, (const uint8_t *)ID, id_len, k_mac, k_enc) ==
              DEVID_SENSOR_ERR_NULL,
          "NULL key refused");
    check(devid_sensor_derive(k, (const uint8_t *)ID, 0, k_mac, k_enc) == DEVID_SENSOR_ERR_BAD_ID,
          "empty id refused");
    check(strcmp(devid_sensor_error_name(DEVID_SENSOR_ERR_BAD_MAC), "bad_mac") == 0,
          "error names");

    printf("%d failures\n", failures);
    return failures == 0 ? 0 : 1;
}

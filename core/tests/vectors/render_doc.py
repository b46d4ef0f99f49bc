#!/usr/bin/env python3
"""Rewrites the "## Test vector" section of docs/protocol.md from core/tests/vectors/devid1.json.

Run from the repository root after regenerating the vector; protocol_vectors.rs checks that the
document carries every value of the JSON.
"""
import json
import textwrap

v = json.load(open('core/tests/vectors/devid1.json'))
doc = open('docs/protocol.md').read()
head = doc.split('## Test vector')[0]
out = ["## Test vector", "",
       "All values hex. The same data is `core/tests/vectors/devid1.json`;",
       "`cargo test -p devid-core --test protocol_vectors` reproduces every message and key from the",
       "inputs. ECDSA signatures are randomized, so sig_s and sig_c are inputs here (they verify over",
       "the stated messages). The ephemeral private scalars eph_c and eph_s give share_c and share_s.",
       "Random inputs were drawn in this order: device nonce_c, eph_c; broker nonce_s, eph_s, ticket",
       "nonce; then resume nonce_c; resume nonce_s, resume ticket nonce. Time: now = %d (Unix seconds)."
       % v['inputs']['now'], ""]


def block(name, hexs):
    lines = textwrap.wrap(hexs, 64) or [""]
    return ["%s (%d bytes):" % (name, len(hexs) // 2), "```"] + lines + ["```", ""]


i = v['inputs']
out.append("### Inputs\n")
out.append("client_id = `%s`, broker_name = `%s`, ticket_key_id = %d, ticket_lifetime = %d\n"
           % (i['client_id'], i['broker_name'], i['ticket_key_id'], i['ticket_lifetime']))
for k in ['nonce_c', 'eph_c', 'share_c', 'nonce_s', 'eph_s', 'share_s', 'ticket_nonce',
          'resume_nonce_c', 'resume_nonce_s', 'resume_ticket_nonce', 'ticket_key',
          'device_public_key', 'broker_public_key']:
    out += block(k, i[k])
d = v['derived']
out += block('sig_s', d['full']['sig_s'])
out += block('sig_c', d['full']['sig_c'])
out += block('root certificate (DER)', i['root_der'])
for n, c in enumerate(i['device_chain_der']):
    out += block('device chain [%d] (DER)' % n, c)
for n, c in enumerate(i['broker_chain_der']):
    out += block('broker chain [%d] (DER)' % n, c)
out += block('device key (PKCS#8, test only)', i['device_key_pkcs8'])
out += block('broker key (PKCS#8, test only)', i['broker_key_pkcs8'])
out.append("### Full handshake\n")
m = v['messages']
for k in ['client_hello', 'server_hello', 'client_finish', 'server_finish']:
    out += block(k, m[k])
f = d['full']
for k in ['z', 'secret', 'th1', 'k_bmac', 'k_dmac', 'mac_s', 'th2', 'mac_c', 'th3', 'mac_f', 'ticket']:
    out += block(k, f[k])
for k in ['k_c2s', 'k_s2c', 'resumption_secret', 'session_id']:
    out += block(k, f['keys'][k])
out.append("### Resumption (from the full handshake's ticket and resumption_secret)\n")
for k in ['resume_hello', 'resume_challenge', 'resume_proof', 'resume_finish']:
    out += block(k, m[k])
r = d['resume']
for k in ['secret_r', 'thr', 'k_dmac', 'k_bmac', 'mac_c', 'thr3', 'mac_f', 'ticket']:
    out += block(k, r[k])
for k in ['k_c2s', 'k_s2c', 'resumption_secret', 'session_id']:
    out += block(k, r['keys'][k])
p = d['publish']
out.append("### Per-message authentication (k_c2s of the full handshake)\n")
out.append("topic = `%s`\n" % p['topic'])
for k in ['k_c2s', 'k_mac', 'k_seal']:
    out += block(k, p[k])
out.append("devid-mac, seq 1:\n")
for k in ['payload', 'hmac']:
    out += block(k, p['mac'][k])
out.append("devid-mac property value: `%s`\n" % p['mac']['devid_mac'])
out.append("devid-seal, seq 2:\n")
for k in ['nonce', 'aad', 'plaintext', 'sealed']:
    out += block(k, p['seal'][k])
open('docs/protocol.md', 'w').write(head + "\n".join(out))

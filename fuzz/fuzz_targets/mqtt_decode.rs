//! The device's MQTT v5 codec on broker bytes: `devid_device::mqtt::decode`.
//! Input: the byte stream as received. Checks, beyond "no panic": a decoded packet used no more
//! bytes than given; a packet that re-encodes decodes to itself with exactly the encoded length;
//! a shorter prefix of a complete packet is never decoded as a (different) packet.
#![no_main]

use devid_device::mqtt::decode;
use libfuzzer_sys::fuzz_target;

/// A small limit too, so the size check is exercised without huge inputs.
const LIMITS: [u32; 2] = [1 << 20, 64];

fuzz_target!(|data: &[u8]| {
    for max in LIMITS {
        let mut buf = data;
        // Read packets back to back, as the connection does.
        while let Ok(Some(d)) = decode(buf, max) {
            assert!(d.len > 0 && d.len <= buf.len(), "used {} of {}", d.len, buf.len());
            assert!(d.len <= max as usize, "a {}-byte packet passed max {max}", d.len);
            if let Ok(Some(short)) = decode(&buf[..d.len - 1], max) {
                panic!("a prefix decoded as {:?}", short.packet);
            }
            let mut out = Vec::new();
            if d.packet.encode(&mut out).is_ok() {
                match decode(&out, u32::MAX) {
                    Ok(Some(again)) => {
                        assert_eq!(again.packet, d.packet, "re-encoding changed the packet");
                        assert_eq!(again.len, out.len());
                    }
                    other => panic!("re-encoded {:?} does not decode: {other:?}", d.packet),
                }
            }
            buf = &buf[d.len..];
        }
    }
});

//! An incremental parser for `text/event-stream` (Server-Sent Events), for the clients of
//! devid's live device feed of revocations and settings changes (the CLI's `revocations
//! watch`, the broker plugin). Bytes in, events out; no I/O.
//!
//! It follows the WHATWG rules the feed uses: fields `id`, `event` and `data` (several `data`
//! lines join with `\n`), comment lines starting with `:`, LF or CRLF line ends, and a blank line
//! that dispatches the event when it has data. Other fields are ignored.

/// One event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Longest line kept: a longer one is dropped (the feed never sends such lines).
const MAX_LINE: usize = 1 << 20;

#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// Feeds bytes as they arrive; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if self.has_data {
                    events.push(std::mem::take(&mut self.current));
                } else {
                    self.current = SseEvent::default();
                }
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_ref(), ""),
            };
            match field {
                "id" => self.current.id = Some(value.to_string()),
                "event" => self.current.event = Some(value.to_string()),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        if self.buf.len() > MAX_LINE {
            self.buf.clear();
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_with_lf_and_crlf() {
        let text = ": keep-alive\n\nid: 1\nevent: revocation\ndata: {\"a\":1}\n\nid: 2\r\ndata: x\r\ndata: y\r\n\r\n";
        for size in [1, 3, 7, text.len()] {
            let mut p = SseParser::default();
            let mut all = Vec::new();
            for chunk in text.as_bytes().chunks(size) {
                all.extend(p.push(chunk));
            }
            assert_eq!(
                all,
                vec![
                    SseEvent {
                        id: Some("1".into()),
                        event: Some("revocation".into()),
                        data: "{\"a\":1}".into()
                    },
                    SseEvent {
                        id: Some("2".into()),
                        event: None,
                        data: "x\ny".into()
                    },
                ],
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn comments_events_without_data_and_partial_events_dispatch_nothing() {
        let mut p = SseParser::default();
        assert!(p.push(b":ping\n\n:ping\n\n").is_empty());
        assert!(p.push(b"event: revocation\n\n").is_empty());
        assert!(p.push(b"data: partial").is_empty());
        assert_eq!(p.push(b"\n\n")[0].data, "partial");
    }

    #[test]
    fn an_overlong_line_is_dropped() {
        let mut p = SseParser::default();
        assert!(p.push(&vec![b'x'; MAX_LINE + 1]).is_empty());
        assert_eq!(p.push(b"data: ok\n\n")[0].data, "ok");
    }
}

//! The sensor link's byte streams: a serial device, a pseudo-terminal the gateway creates, or
//! a Unix socket. Each stream has its own frame decoder (`devid_sensor::frame`); what they
//! decode arrives on one channel as [`LinkEvent`]s. The gateway reads these bytes and never
//! needs a sensor key.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use devid_sensor::frame::{self, Decoder, Push};
use devid_sensor::MAC_LEN;
use rustix::fs::OFlags;
use rustix::termios::{self, OptionalActions};
use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;
use tokio::sync::mpsc;

/// Largest encoded frame a gateway accepts (a 255-byte topic and a 700-byte reading).
pub const FRAME_MAX: usize = 1024;

/// Where the sensors' frames come from (or go to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkSpec {
    /// A serial device (made raw; at `baud` when given), or any file that yields frames.
    Serial { path: PathBuf, baud: Option<u32> },
    /// A pseudo-terminal the gateway creates; `link` becomes a symlink to its terminal side,
    /// which sensors open like a serial device.
    Pty { link: PathBuf },
    /// A Unix socket the gateway listens on; each connection is one sensor stream.
    Socket { path: PathBuf },
}

/// Who sent a reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SensorName {
    Id(String),
    Index(u8),
}

/// Where a reading goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Channel(String),
    Topic(String),
}

/// A reading decoded from a frame, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkReading {
    pub sensor: SensorName,
    pub seq: u64,
    pub target: Target,
    pub payload: Vec<u8>,
    /// The publish MAC, or `None` for a sealed reading.
    pub mac: Option<[u8; MAC_LEN]>,
}

impl LinkReading {
    fn from_frame(r: &frame::Reading<'_>) -> Self {
        // The frame decoder checked the id, channel and topic (ASCII, UTF-8).
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        LinkReading {
            sensor: match r.sensor {
                frame::SensorRef::Id(id) => SensorName::Id(text(id)),
                frame::SensorRef::Index(i) => SensorName::Index(i),
            },
            seq: r.seq,
            target: match r.destination {
                frame::Destination::Channel(c) => Target::Channel(text(c)),
                frame::Destination::Topic(t) => Target::Topic(text(t)),
            },
            payload: r.payload.to_vec(),
            mac: match r.protection {
                frame::Protection::Mac(m) => Some(m),
                frame::Protection::Sealed => None,
            },
        }
    }
}

/// What a link stream produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    Reading(LinkReading),
    /// A frame was dropped (its reason name, e.g. `bad_frame`).
    Dropped(&'static str),
    /// A stream ended (a socket connection closed, or a read failed).
    Closed(String),
}

/// Errors setting up a link.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> LinkError + 'a {
    move |source| LinkError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// A listening link: keep it alive as long as frames should be read.
pub struct Listening {
    /// The terminal side of a gateway-made pty (`/dev/pts/N`).
    pub pty_path: Option<PathBuf>,
    /// Held open so that the pty's reader never sees a hang-up between sensor sessions.
    _pty_terminal: Option<File>,
}

/// Opens the link and starts decoding: every stream's events go to `events`.
pub async fn listen(
    spec: &LinkSpec,
    events: mpsc::Sender<LinkEvent>,
) -> Result<Listening, LinkError> {
    match spec {
        LinkSpec::Serial { path, baud } => {
            let file = open_tty(path, false, *baud)?;
            spawn_blocking_reader(file, events);
            Ok(Listening {
                pty_path: None,
                _pty_terminal: None,
            })
        }
        LinkSpec::Pty { link } => {
            let (master, pts) = open_pty().map_err(io_err("cannot create a pty for", link))?;
            let terminal = open_tty(&pts, true, None)?;
            if std::fs::symlink_metadata(link).is_ok_and(|m| m.file_type().is_symlink()) {
                std::fs::remove_file(link).map_err(io_err("cannot replace", link))?;
            }
            std::os::unix::fs::symlink(&pts, link).map_err(io_err("cannot link", link))?;
            spawn_blocking_reader(File::from(master), events);
            Ok(Listening {
                pty_path: Some(pts),
                _pty_terminal: Some(terminal),
            })
        }
        LinkSpec::Socket { path } => {
            if std::fs::symlink_metadata(path)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                std::fs::remove_file(path).map_err(io_err("cannot replace", path))?;
            }
            let listener = UnixListener::bind(path).map_err(io_err("cannot listen on", path))?;
            tokio::spawn(accept_loop(listener, events));
            Ok(Listening {
                pty_path: None,
                _pty_terminal: None,
            })
        }
    }
}

/// A new pty: its controller side and the path of its terminal side.
fn open_pty() -> std::io::Result<(OwnedFd, PathBuf)> {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(name.as_bytes()));
    Ok((master, path))
}

/// Opens a serial device, a pty's terminal side or a plain file; a terminal is made raw (no
/// echo, no line editing, no newline translation: bytes pass unchanged), at `baud` if given.
pub fn open_tty(path: &Path, write: bool, baud: Option<u32>) -> Result<File, LinkError> {
    let file = OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(OFlags::NOCTTY.bits() as i32)
        .open(path)
        .map_err(io_err("cannot open", path))?;
    if termios::isatty(file.as_fd()) {
        let mut t = termios::tcgetattr(&file)
            .map_err(|e| io_err("cannot read the termios of", path)(e.into()))?;
        t.make_raw();
        if let Some(b) = baud {
            t.set_speed(b)
                .map_err(|e| io_err("unsupported baud rate for", path)(e.into()))?;
        }
        termios::tcsetattr(&file, OptionalActions::Now, &t)
            .map_err(|e| io_err("cannot make raw", path)(e.into()))?;
    }
    Ok(file)
}

/// Reads a stream on a thread of its own (serial devices and ptys have no readiness-based
/// reading in tokio), decoding frames as bytes come.
fn spawn_blocking_reader(mut file: File, events: mpsc::Sender<LinkEvent>) {
    std::thread::spawn(move || {
        let mut decoder = Box::new(Decoder::<FRAME_MAX>::new());
        let mut buf = [0u8; 4096];
        loop {
            match file.read(&mut buf) {
                Ok(0) => {
                    let _ = events.blocking_send(LinkEvent::Closed("end of stream".into()));
                    return;
                }
                Ok(n) => {
                    for ev in decode(&mut decoder, &buf[..n]) {
                        if events.blocking_send(ev).is_err() {
                            return;
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = events.blocking_send(LinkEvent::Closed(e.to_string()));
                    return;
                }
            }
        }
    });
}

async fn accept_loop(listener: UnixListener, events: mpsc::Sender<LinkEvent>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let events = events.clone();
        tokio::spawn(async move {
            let mut decoder = Box::new(Decoder::<FRAME_MAX>::new());
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) => {
                        let _ = events
                            .send(LinkEvent::Closed("connection closed".into()))
                            .await;
                        return;
                    }
                    Ok(n) => {
                        for ev in decode(&mut decoder, &buf[..n]) {
                            if events.send(ev).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = events.send(LinkEvent::Closed(e.to_string())).await;
                        return;
                    }
                }
            }
        });
    }
}

fn decode<const N: usize>(decoder: &mut Decoder<N>, bytes: &[u8]) -> Vec<LinkEvent> {
    let mut out = Vec::new();
    for &b in bytes {
        match decoder.push(b) {
            Push::Pending => {}
            Push::Frame(r) => out.push(LinkEvent::Reading(LinkReading::from_frame(&r))),
            Push::Dropped(e) => out.push(LinkEvent::Dropped(e.as_str())),
        }
    }
    out
}

/// A sensor's side of the link: frames written to a serial device / pty or a Unix socket.
pub enum LinkWriter {
    File(File),
    Socket(std::os::unix::net::UnixStream),
}

impl LinkWriter {
    /// Opens the link for writing and sends a 0x00 so the receiver starts in step.
    pub fn open(spec: &LinkSpec) -> Result<Self, LinkError> {
        let mut w = match spec {
            LinkSpec::Serial { path, baud } => LinkWriter::File(open_tty(path, true, *baud)?),
            LinkSpec::Pty { link } => LinkWriter::File(open_tty(link, true, None)?),
            LinkSpec::Socket { path } => LinkWriter::Socket(
                std::os::unix::net::UnixStream::connect(path)
                    .map_err(io_err("cannot connect to", path))?,
            ),
        };
        w.write_frame(&[0]).map_err(|e| LinkError::Io {
            what: "cannot write to",
            path: format!("{spec:?}"),
            source: e,
        })?;
        Ok(w)
    }

    /// Writes one encoded frame in one write, so that frames of several sensors sharing a
    /// pty never interleave.
    pub fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<()> {
        match self {
            LinkWriter::File(f) => f.write_all(frame),
            LinkWriter::Socket(s) => s.write_all(frame),
        }
    }
}

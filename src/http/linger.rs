//! Lingering close, as nginx's `lingering_close` does it.
//!
//! postgate often answers before it has read a request's body (EntityTooLarge from the declared
//! length, AccessDenied, a quota refusal) and then closes the connection. Closing a socket that
//! still has unread bytes makes the kernel send RST, which discards the answer still in flight:
//! the client, busy sending its body, sees "connection reset" or "broken pipe" instead of the
//! error. So a connection is closed in three steps: the answer is flushed, the write side is shut
//! down (FIN: the client reads the answer and its end), then what the client still sends is read
//! and dropped until it closes too, for at most [`LINGER_TIME`] and [`LINGER_BYTES`].
//!
//! [`Lingering`] wraps the accepted TCP stream (below TLS, so it covers both) and does this in
//! `poll_shutdown`, which hyper's HTTP/1 dispatcher calls when it closes a connection
//! (`proto::h1::dispatch::Dispatcher::poll_inner`, through `Conn::poll_shutdown`; a TLS stream's
//! `poll_shutdown` sends its close_notify and then calls ours). The drain runs in the
//! connection's own future: the connection keeps its permit (it still holds a descriptor) until
//! the drain ends, and graceful shutdown's abort, which drops that future, ends it too.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// Longest a closing connection keeps reading what its client still sends.
pub const LINGER_TIME: Duration = Duration::from_secs(5);
/// Most bytes a closing connection reads and drops before it closes anyway. Generous: a client
/// writing at full speed sees the answer only when it next reads, and until then it sends what
/// its link carries (on loopback, under load, 8 MiB went by before a busy client looked and it
/// was reset). nginx has no such cap, only its times; this one bounds the cost of a connection
/// that never looks, to about what reading a large upload's body costs.
pub const LINGER_BYTES: u64 = 64 << 20;

/// A TCP stream whose shutdown is a lingering close.
pub struct Lingering {
    stream: TcpStream,
    state: State,
}

enum State {
    Open,
    Draining { until: Pin<Box<Sleep>>, read: u64 },
    Closed,
}

impl Lingering {
    pub fn new(stream: TcpStream) -> Lingering {
        Lingering {
            stream,
            state: State::Open,
        }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    /// FIN, then read and drop until the client's EOF, an error, [`LINGER_TIME`] or
    /// [`LINGER_BYTES`]; the stream is closed when it is dropped, with nothing (or little)
    /// left unread.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Open => {
                    // Everything written is flushed first (a TCP stream has no buffer of its
                    // own), then the write side shut: the FIN follows the answer.
                    let shut = ready!(Pin::new(&mut this.stream).poll_shutdown(cx));
                    if shut.is_err() {
                        // Not connected any more: nothing to drain.
                        this.state = State::Closed;
                        return Poll::Ready(shut);
                    }
                    this.state = State::Draining {
                        until: Box::pin(tokio::time::sleep(LINGER_TIME)),
                        read: 0,
                    };
                }
                State::Draining { until, read } => {
                    if until.as_mut().poll(cx).is_ready() {
                        this.state = State::Closed;
                        continue;
                    }
                    let mut scratch = [0u8; 16 * 1024];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match ready!(Pin::new(&mut this.stream).poll_read(cx, &mut buf)) {
                        Ok(()) if !buf.filled().is_empty() => {
                            *read += buf.filled().len() as u64;
                            if *read >= LINGER_BYTES {
                                this.state = State::Closed;
                            }
                        }
                        // EOF: the client has closed its side; or it is gone.
                        Ok(()) | Err(_) => this.state = State::Closed,
                    }
                }
                State::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

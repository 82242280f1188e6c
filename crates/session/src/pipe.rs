//! A bidirectional stream of byte messages as an `AsyncRead + AsyncWrite` byte pipe
//! (upstream's `grpchijack` `net.Conn`).
//!
//! Each write becomes one message; reads concatenate the payloads of the messages
//! received. HTTP/2 runs over the pipe, so message boundaries carry no meaning.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, PollSender};

/// Largest payload put in one message. Both ends accept far bigger messages (16 MiB);
/// this only keeps one write from becoming one huge message.
pub const MAX_MESSAGE: usize = 1 << 20;

type Inbound = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// The byte pipe over a message stream. Dropping it, or the inbound stream ending,
/// cancels the token given to [`MessagePipe::new`], so its owner learns that the
/// tunnel is gone.
pub struct MessagePipe {
    inbound: Inbound,
    pending: Bytes,
    eof: bool,
    outbound: PollSender<Bytes>,
    closed: CancellationToken,
}

impl std::fmt::Debug for MessagePipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessagePipe")
            .field("pending", &self.pending.len())
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

impl MessagePipe {
    /// A pipe reading the payloads of `inbound` and writing messages into `outbound`.
    /// `closed` is cancelled when the inbound stream ends or fails, or the pipe drops.
    pub fn new<S>(inbound: S, outbound: mpsc::Sender<Bytes>, closed: CancellationToken) -> Self
    where
        S: Stream<Item = io::Result<Bytes>> + Send + 'static,
    {
        MessagePipe {
            inbound: Box::pin(inbound),
            pending: Bytes::new(),
            eof: false,
            outbound: PollSender::new(outbound),
            closed,
        }
    }
}

impl Drop for MessagePipe {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

impl AsyncRead for MessagePipe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                let chunk = self.pending.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(self.inbound.poll_next_unpin(cx)) {
                Some(Ok(data)) => self.pending = data,
                Some(Err(e)) => {
                    self.eof = true;
                    self.closed.cancel();
                    return Poll::Ready(Err(e));
                }
                None => {
                    self.eof = true;
                    self.closed.cancel();
                }
            }
        }
    }
}

impl AsyncWrite for MessagePipe {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let broken = |_| io::Error::from(io::ErrorKind::BrokenPipe);
        ready!(self.outbound.poll_reserve(cx)).map_err(broken)?;
        let n = buf.len().min(MAX_MESSAGE);
        // A buffer of its own, which the message takes over without another copy.
        self.outbound
            .send_item(Bytes::from(buf[..n].to_vec()))
            .map_err(broken)?;
        Poll::Ready(Ok(n))
    }

    /// All the slices (up to [`MAX_MESSAGE`] bytes) in one message: HTTP/2 writes a
    /// frame as its header and its payload, and two messages per frame would double
    /// the work of every layer below.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total = bufs.iter().map(|b| b.len()).sum::<usize>().min(MAX_MESSAGE);
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        let broken = |_| io::Error::from(io::ErrorKind::BrokenPipe);
        ready!(self.outbound.poll_reserve(cx)).map_err(broken)?;
        let mut message = Vec::with_capacity(total);
        for b in bufs {
            let take = b.len().min(total - message.len());
            message.extend_from_slice(&b[..take]);
        }
        self.outbound
            .send_item(Bytes::from(message))
            .map_err(broken)?;
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.outbound.close();
        Poll::Ready(Ok(()))
    }
}

impl tonic::transport::server::Connected for MessagePipe {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_concatenate_and_writes_are_messages() {
        let inbound = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"hel")),
            Ok(Bytes::new()),
            Ok(Bytes::from_static(b"lo")),
        ]);
        let (tx, mut rx) = mpsc::channel(8);
        let closed = CancellationToken::new();
        let mut pipe = MessagePipe::new(inbound, tx, closed.clone());
        let mut got = String::new();
        pipe.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "hello");
        assert!(closed.is_cancelled(), "end of inbound closes the pipe");

        pipe.write_all(b"one").await.unwrap();
        pipe.write_all(b"two").await.unwrap();
        pipe.shutdown().await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"one"));
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"two"));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn errors_and_drop_close() {
        let inbound = futures::stream::iter(vec![Err(io::Error::other("boom"))]);
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let closed = CancellationToken::new();
        let mut pipe = MessagePipe::new(inbound, tx, closed.clone());
        let mut buf = [0u8; 4];
        assert!(pipe.read(&mut buf).await.is_err());
        assert_eq!(
            pipe.write(b"x").await.unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
        let closed2 = CancellationToken::new();
        let (tx2, _rx2) = mpsc::channel(1);
        drop(MessagePipe::new(
            futures::stream::pending(),
            tx2,
            closed2.clone(),
        ));
        assert!(closed2.is_cancelled());
        assert!(closed.is_cancelled());
    }

    #[tokio::test]
    async fn vectored_writes_are_one_message() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut pipe = MessagePipe::new(futures::stream::pending(), tx, CancellationToken::new());
        let big = vec![1u8; MAX_MESSAGE];
        let bufs = [io::IoSlice::new(b"head"), io::IoSlice::new(&big)];
        let n = pipe.write_vectored(&bufs).await.unwrap();
        assert_eq!(n, MAX_MESSAGE, "as much as one message holds");
        let m = rx.recv().await.unwrap();
        assert_eq!(m.len(), MAX_MESSAGE);
        assert_eq!(&m[..5], b"head\x01");
        assert_eq!(pipe.write_vectored(&[]).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn large_writes_are_split() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut pipe = MessagePipe::new(futures::stream::pending(), tx, CancellationToken::new());
        let data = vec![7u8; MAX_MESSAGE + 10];
        pipe.write_all(&data).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().len(), MAX_MESSAGE);
        assert_eq!(rx.recv().await.unwrap().len(), 10);
    }
}

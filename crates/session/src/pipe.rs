//! A bidirectional stream of byte messages as an `AsyncRead + AsyncWrite` byte pipe
//! (upstream's `grpchijack` `net.Conn`).
//!
//! Each write (a vectored one included) becomes one message, and `outgoing` merges
//! the writes still queued when the next message goes out; reads concatenate the
//! payloads of the messages received (`drained` reads them ahead). HTTP/2 runs over
//! the pipe, so message boundaries carry no meaning.

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

/// Bytes of received messages a tunnel reads ahead for its pipe (see [`drained`]).
pub(crate) const READ_AHEAD: usize = 8 << 20;

/// `inbound`, read ahead by a task of its own into a buffer of up to `budget` bytes.
///
/// The messages of a tunnel are DATA frames of the HTTP/2 stream carrying it, and the
/// `h2` crate closes a connection on which many small DATA frames wait unread (a
/// defence against floods), failing every call on it: the build's own included. A
/// tunnel carries many small messages (a request per file, window updates), and while
/// the side reading them is busy they would pile up there. Read ahead, they wait here
/// instead, counted in bytes.
pub(crate) fn drained<S>(inbound: S, budget: usize) -> impl Stream<Item = io::Result<Bytes>> + Send
where
    S: Stream<Item = io::Result<Bytes>> + Send + 'static,
{
    let budget = budget.clamp(1, u32::MAX as usize);
    let room = std::sync::Arc::new(tokio::sync::Semaphore::new(budget));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut inbound = std::pin::pin!(inbound);
        loop {
            let item = tokio::select! {
                item = inbound.next() => item,
                // The pipe is gone: stop reading (and drop the stream).
                () = tx.closed() => return,
            };
            let Some(item) = item else { return };
            let cost = item.as_ref().map_or(0, |b| b.len().min(budget));
            let Ok(permit) = room
                .clone()
                .acquire_many_owned(u32::try_from(cost).unwrap_or(u32::MAX))
                .await
            else {
                return;
            };
            if tx.send((item, permit)).is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(|(item, permit)| {
        // The room it took is free again once the pipe has it.
        drop(permit);
        item
    })
}

/// The messages to send for what a pipe wrote into `rx`: writes still queued when the
/// next message is taken go out in it together (up to [`MAX_MESSAGE`] bytes), so that a
/// busy tunnel carries fewer, larger messages. A peer that sends small HTTP/2 frames
/// (16 KiB is the default) otherwise costs one message per frame.
pub(crate) fn outgoing(rx: mpsc::Receiver<Bytes>) -> impl Stream<Item = Vec<u8>> + Send {
    futures::stream::unfold((rx, None::<Bytes>), |(mut rx, held)| async move {
        let first = match held {
            Some(b) => b,
            None => rx.recv().await?,
        };
        // No copy while alone: the pipe made this buffer for the message.
        let mut message = Vec::from(first);
        loop {
            match rx.try_recv() {
                Ok(next) if message.len() + next.len() <= MAX_MESSAGE => {
                    message.extend_from_slice(&next);
                }
                Ok(next) => return Some((message, (rx, Some(next)))),
                Err(_) => return Some((message, (rx, None))),
            }
        }
    })
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
    async fn queued_writes_go_out_together() {
        let (tx, rx) = mpsc::channel(8);
        for part in [&b"ab"[..], b"cd", b"ef"] {
            tx.send(Bytes::copy_from_slice(part)).await.unwrap();
        }
        tx.send(Bytes::from(vec![9u8; MAX_MESSAGE - 1]))
            .await
            .unwrap();
        drop(tx);
        let got: Vec<Vec<u8>> = outgoing(rx).collect().await;
        let sizes: Vec<usize> = got.iter().map(Vec::len).collect();
        assert_eq!(
            sizes,
            [6, MAX_MESSAGE - 1],
            "merged up to the limit, in order"
        );
        assert_eq!(got[0], b"abcdef");
    }

    #[tokio::test]
    async fn reading_ahead_keeps_order_and_stops_at_the_budget() {
        let (tx, rx) = mpsc::unbounded_channel::<io::Result<Bytes>>();
        let inbound = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let read = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = read.clone();
        let inbound = inbound.inspect(move |_| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        let mut ahead = Box::pin(drained(inbound, 10));
        for m in [&b"0123"[..], b"4567", b"89ab", b"cdef"] {
            tx.send(Ok(Bytes::copy_from_slice(m))).unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(
            read.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "read ahead while 10 bytes hold them (the third waits for room)"
        );
        tx.send(Err(io::Error::other("end"))).unwrap();
        drop(tx);
        let mut got = Vec::new();
        while let Some(item) = ahead.next().await {
            match item {
                Ok(b) => got.extend_from_slice(&b),
                Err(e) => {
                    assert_eq!(e.to_string(), "end");
                    break;
                }
            }
        }
        assert_eq!(got, b"0123456789abcdef");
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

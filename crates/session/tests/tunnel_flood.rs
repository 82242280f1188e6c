//! A session tunnel carrying a burst of small messages must not cost the client its
//! connection to the daemon: `h2` closes a connection on which many small DATA frames
//! wait unread ("too_many_data_frames"), and every tunneled HTTP/2 frame is a message,
//! that is a DATA frame of the `Control.Session` stream. The daemon's end reads the
//! stream ahead of its tunneled connection, so they do not wait in `h2`.

mod common;

use std::path::Path;
use std::time::Duration;

use proto::control::control_client::ControlClient;
use proto::control::*;
use session::{SessionInfo, SessionManager};
use tonic::Request;
use tonic::transport::Channel;

async fn daemon(dir: &Path) -> ControlClient<Channel> {
    common::serve(dir, SessionManager::new()).await
}

/// An HTTP/2 frame with an empty stream id.
fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

#[tokio::test]
async fn small_tunnel_messages_behind_a_stalled_reader_keep_the_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let mut client = daemon(tmp.path()).await;

    // The client's end of the tunnel, written by hand: the server preface (an empty
    // SETTINGS), then PINGs. The daemon's tunneled client answers each; those answers
    // are not read here, so once they fill the stream's window the daemon's end stops
    // reading the tunnel (it cannot answer). Then more PINGs, one message each, pile up.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<BytesMessage>();
    let mut request = Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
    SessionInfo {
        id: "flood".into(),
        shared_key: "k".into(),
        methods: Vec::new(),
        health_timeout: None,
    }
    .to_metadata(request.metadata_mut())
    .unwrap();
    let ping = |i: u64| BytesMessage {
        data: frame(0x6, 0, &i.to_be_bytes()),
    };
    tx.send(BytesMessage {
        data: frame(0x4, 0, &[]),
    })
    .unwrap();
    // About 2.4 MB of answers: more than the client's default 2 MiB stream window, but
    // not so many PINGs that they fill the daemon's 1 MiB window once it stops reading.
    for i in 0..140_000 {
        tx.send(ping(i)).unwrap();
    }
    let mut replies = client.session(request).await.unwrap().into_inner();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Small messages, each going out on its own (the stream is empty in between).
    let mut sent = 0u64;
    for i in 0..10_000 {
        if tx.send(ping(i)).is_err() {
            break;
        }
        sent += 1;
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Every PING is answered: the session (and its connection) stayed up.
    let want = (140_000 + sent as usize) * 17;
    let mut received = 0usize;
    let answered = tokio::time::timeout(Duration::from_secs(60), async {
        while received < want {
            match replies.message().await {
                Ok(Some(m)) => received += m.data.len(),
                Ok(None) => return Err("the session stream ended".to_string()),
                Err(status) => return Err(status.to_string()),
            }
        }
        Ok(())
    })
    .await
    .expect("the daemon answers in time");
    assert_eq!(sent, 10_000, "the session call ended early: {answered:?}");
    answered.expect("the session stream stays up");
    client
        .info(InfoRequest::default())
        .await
        .expect("the connection to the daemon works");
}

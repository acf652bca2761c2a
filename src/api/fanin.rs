//! Live tails for the cluster. A peer asked to follow answers a stream of
//! frames (a u32 length, then postcard [`PeerRows`]): first what it has
//! (the backfill), then each batch of matching writes as it is stored.
//! The node that answers reads every peer's first frame, merges them with
//! its own backfill, then feeds the peers' batches into one bounded
//! channel beside its own live writes. A slow client stalls the channel,
//! the channel stalls the peer's socket, and the peer drops that follower
//! as it drops any that falls behind: memory stays bounded.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use super::cluster::{Fanout, PeerRows};
use super::params::Params;
use super::{AppState, Row};
use crate::cluster::Missing;
use crate::cluster::client::Streaming;

/// Largest frame a peer may send (a batch of writes, or the backfill).
const MAX_FRAME: usize = 32 << 20;

/// Peers' batches queued for one follower before their sockets stall.
const QUEUED_BATCHES: usize = 64;

/// `rows` as one frame.
pub fn frame(rows: Vec<Row>) -> Bytes {
    let payload = postcard::to_allocvec(&PeerRows::new(rows)).unwrap_or_default();
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    Bytes::from(out)
}

/// Reads frames from a peer's answer.
struct Frames {
    body: hyper::body::Incoming,
    buffer: Vec<u8>,
}

impl Frames {
    /// The next frame's rows; `None` at the end, or on a broken frame.
    async fn next(&mut self) -> Option<Vec<Row>> {
        loop {
            if self.buffer.len() >= 4 {
                let length = u32::from_le_bytes(self.buffer[..4].try_into().ok()?) as usize;
                if length > MAX_FRAME {
                    return None;
                }
                if self.buffer.len() >= 4 + length {
                    let rows: PeerRows = postcard::from_bytes(&self.buffer[4..4 + length]).ok()?;
                    self.buffer.drain(..4 + length);
                    return Some(rows.rows());
                }
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(data) = frame.into_data() {
                self.buffer.extend_from_slice(&data);
            }
        }
    }
}

/// A peer's follow answer as frames, once its first (the backfill) came
/// within the peer timeout.
async fn first_frame(state: &AppState, response: Streaming) -> Option<(Frames, Vec<Row>)> {
    let mut frames = Frames {
        body: response.into_body(),
        buffer: Vec::new(),
    };
    match tokio::time::timeout(state.peer_client.timeout(), frames.next()).await {
        Ok(Some(rows)) => Some((frames, rows)),
        _ => None,
    }
}

/// The peers' part of a follow: their backfills, and their live batches.
pub struct PeerFeed {
    /// Each peer's backfill (what it had when asked).
    pub backfill: Vec<Vec<Row>>,
    /// Their batches as they come (peers that come back or join included),
    /// for as long as the follower reads them.
    pub live: mpsc::Receiver<Vec<Row>>,
    /// The peers that could not be followed.
    pub missing: Vec<Missing>,
}

/// The peers a follower is fed by now, and the addresses that are this
/// daemon itself.
#[derive(Default)]
struct Peering {
    active: HashSet<SocketAddr>,
    myself: HashSet<SocketAddr>,
}

type Followed = Arc<Mutex<Peering>>;

fn lock(followed: &Followed) -> std::sync::MutexGuard<'_, Peering> {
    followed.lock().unwrap_or_else(|e| e.into_inner())
}

/// How often a follower looks for peers it is not fed by.
const REJOIN: Duration = Duration::from_secs(2);

/// Feeds one peer's frames to the follower until either ends.
async fn forward(
    mut frames: Frames,
    sender: mpsc::Sender<Vec<Row>>,
    peer: SocketAddr,
    followed: Followed,
) {
    loop {
        let rows = tokio::select! {
            rows = frames.next() => rows,
            // The follower went away: let go of the peer.
            () = sender.closed() => break,
        };
        let Some(rows) = rows else {
            tracing::debug!(%peer, "A peer's follow stream ended; following it again when it answers.");
            break;
        };
        if !rows.is_empty() && sender.send(rows).await.is_err() {
            break;
        }
    }
    lock(&followed).active.remove(&peer);
}

/// While the follower lives: follows again a peer whose stream ended, and
/// a peer that joined, every [`REJOIN`].
async fn supervise(
    state: AppState,
    fanout: Fanout,
    p: Params,
    sender: mpsc::Sender<Vec<Row>>,
    followed: Followed,
) {
    loop {
        tokio::select! {
            () = sender.closed() => return,
            () = tokio::time::sleep(REJOIN) => {}
        }
        let Ok(peers) = fanout.peers(&state, &p) else {
            return;
        };
        for peer in peers {
            {
                let now = lock(&followed);
                if now.active.contains(&peer.address) || now.myself.contains(&peer.address) {
                    continue;
                }
            }
            let opened = state
                .peer_client
                .open(&peer, fanout.path(), p.pairs(), fanout.authorization())
                .await;
            let response = match opened {
                Ok(Some(response)) => response,
                Ok(None) => {
                    lock(&followed).myself.insert(peer.address);
                    continue;
                }
                Err(_) => continue,
            };
            // The (empty) backfill first.
            let Some((frames, _)) = first_frame(&state, response).await else {
                continue;
            };
            tracing::debug!(peer = %peer.address, "Following a peer again.");
            lock(&followed).active.insert(peer.address);
            tokio::spawn(forward(
                frames,
                sender.clone(),
                peer.address,
                followed.clone(),
            ));
        }
    }
}

/// Opens a follow on every peer the request asks (none: `None`).
pub async fn follow_peers(
    state: &AppState,
    fanout: &Fanout,
    p: &Params,
) -> Result<Option<PeerFeed>, super::ApiError> {
    let peers = fanout.peers(state, p)?;
    if peers.is_empty() {
        return Ok(None);
    }
    let opened = futures_util::future::join_all(peers.iter().map(|peer| {
        state
            .peer_client
            .open(peer, fanout.path(), p.pairs(), fanout.authorization())
    }))
    .await;
    let (sender, live) = mpsc::channel(QUEUED_BATCHES);
    let mut feed = PeerFeed {
        backfill: Vec::new(),
        live,
        missing: Vec::new(),
    };
    let followed: Followed = Arc::default();
    for (peer, opened) in peers.iter().zip(opened) {
        let response: Streaming = match opened {
            Ok(Some(response)) => response,
            // This daemon itself, under another address.
            Ok(None) => {
                lock(&followed).myself.insert(peer.address);
                continue;
            }
            Err(missing) => {
                feed.missing.push(missing);
                continue;
            }
        };
        let Some((frames, backfill)) = first_frame(state, response).await else {
            feed.missing.push(Missing {
                peer: peer.address,
                node: peer.node.clone(),
                reason: "sent no backfill".into(),
            });
            continue;
        };
        feed.backfill.push(backfill);
        lock(&followed).active.insert(peer.address);
        tokio::spawn(forward(
            frames,
            sender.clone(),
            peer.address,
            followed.clone(),
        ));
    }
    // Peers that come back, or join, are followed from then on (without a
    // backfill: what they wrote meanwhile is not a live line any more).
    let mut again = p.clone();
    again.push("limit", "0".into());
    tokio::spawn(supervise(
        state.clone(),
        fanout.clone(),
        again,
        sender,
        followed,
    ));
    Ok(Some(feed))
}

/// The peer form of a follow: the backfill frame, then a frame per batch
/// of `live`, until the follower or this daemon goes away.
pub fn peer_body(
    initial: Vec<Row>,
    live: futures_util::stream::BoxStream<'static, Vec<Row>>,
) -> Body {
    use futures_util::StreamExt;
    let first = futures_util::stream::once(async move { frame(initial) });
    let rest = live.map(frame);
    Body::from_stream(first.chain(rest).map(Ok::<Bytes, std::convert::Infallible>))
}

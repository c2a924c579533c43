//! A TCP proxy on loopback between sluice and PostgreSQL, with faults on demand: cut every
//! connection, stall (forward nothing), throttle, and cut a connection right around its COMMIT.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// What to do the next time a client sends a simple-query `COMMIT`, alone or after the leader's
/// epoch check (0 in `State` means nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CommitCut {
    /// Forward the COMMIT, let the server run it, never forward the reply, then cut.
    AfterCommit = 1,
    /// Cut without forwarding the COMMIT: the server rolls the transaction back.
    BeforeCommit = 2,
}

#[derive(Default)]
struct State {
    conns: Mutex<Vec<AbortHandle>>,
    accepted: AtomicUsize,
    commit_cut: AtomicU8,
    commit_cuts_done: AtomicUsize,
    /// Bytes per second in each direction; 0 = unlimited.
    throttle: AtomicU64,
    /// Client-to-server bytes of replication connections are held (not forwarded) while set.
    hold_up: AtomicBool,
}

pub struct Proxy {
    pub port: u16,
    state: Arc<State>,
    paused: watch::Sender<bool>,
    accept: AbortHandle,
}

impl Proxy {
    /// Listens on 127.0.0.1 and forwards to 127.0.0.1:`target`.
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let (paused, paused_rx) = watch::channel(false);
        let st = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                st.accepted.fetch_add(1, Ordering::SeqCst);
                let st2 = st.clone();
                let paused = paused_rx.clone();
                let task = tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    connection(client, server, st2, paused).await;
                });
                st.conns.lock().unwrap().push(task.abort_handle());
            }
        })
        .abort_handle();
        Proxy {
            port,
            state,
            paused,
            accept,
        }
    }

    /// `url` with its port replaced by the proxy's.
    pub fn url(&self, url: &str, real_port: u16) -> String {
        url.replace(
            &format!("127.0.0.1:{real_port}/"),
            &format!("127.0.0.1:{}/", self.port),
        )
    }

    /// Drops every live connection (both sides see the socket close).
    pub fn cut_all(&self) -> usize {
        let conns = std::mem::take(&mut *self.state.conns.lock().unwrap());
        let n = conns.iter().filter(|c| !c.is_finished()).count();
        for c in conns {
            c.abort();
        }
        n
    }

    /// While paused, no byte moves in either direction (sockets stay open).
    pub fn pause(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    pub fn throttle(&self, bytes_per_second: u64) {
        self.state
            .throttle
            .store(bytes_per_second, Ordering::SeqCst);
    }

    /// Holds everything a replication connection's client sends (its standby status updates)
    /// while set; the server's data still flows to the client. Ordinary connections are not
    /// held: PostgreSQL re-sends a Relation message whenever the table's cache entry is
    /// invalidated (an ANALYZE, or an invalidation-queue overflow under load), sluice then reads
    /// the key from the catalog over its SQL connection, and holding that read would stall the
    /// stream for as long as the hold lasts.
    pub fn hold_upstream(&self, hold: bool) {
        self.state.hold_up.store(hold, Ordering::SeqCst);
    }

    pub fn arm_commit_cut(&self, cut: CommitCut) {
        self.state.commit_cut.store(cut as u8, Ordering::SeqCst);
    }

    pub fn commit_cuts_done(&self) -> usize {
        self.state.commit_cuts_done.load(Ordering::SeqCst)
    }

    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
    }
}

const COMMIT_QUERY: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";
/// A leader's COMMIT travels in one simple query after its epoch check (`sink::lease`).
const FENCED_COMMIT: &[u8] = b"; COMMIT\0";

async fn connection(
    client: TcpStream,
    server: TcpStream,
    st: Arc<State>,
    paused: watch::Receiver<bool>,
) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    // Set when a COMMIT was forwarded and its reply must never reach the client.
    let swallow = Arc::new(AtomicBool::new(false));
    let up = {
        let st = st.clone();
        let swallow = swallow.clone();
        let mut paused = paused.clone();
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            // The startup packet of a logical replication connection carries this parameter.
            let mut replication = false;
            loop {
                let n = match cr.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                replication = replication || contains(&buf[..n], b"replication\0database\0");
                wait_unpaused(&mut paused).await;
                while replication && st.hold_up.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let chunk = &buf[..n];
                if contains(chunk, COMMIT_QUERY) || contains(chunk, FENCED_COMMIT) {
                    match st.commit_cut.swap(0, Ordering::SeqCst) {
                        1 => {
                            swallow.store(true, Ordering::SeqCst);
                            let _ = sw.write_all(chunk).await;
                            // Give the server time to run the COMMIT, then cut.
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            st.commit_cuts_done.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        2 => {
                            st.commit_cuts_done.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        _ => {}
                    }
                }
                throttle(&st, n).await;
                if sw.write_all(chunk).await.is_err() {
                    return;
                }
            }
        }
    };
    let down = {
        let st = st.clone();
        let swallow = swallow.clone();
        let mut paused = paused.clone();
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match sr.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                wait_unpaused(&mut paused).await;
                if swallow.load(Ordering::SeqCst) {
                    continue;
                }
                throttle(&st, n).await;
                if cw.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    };
    // Either direction ending ends the connection: both sockets drop here.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

async fn wait_unpaused(paused: &mut watch::Receiver<bool>) {
    while *paused.borrow_and_update() {
        if paused.changed().await.is_err() {
            return;
        }
    }
}

async fn throttle(st: &State, n: usize) {
    let rate = st.throttle.load(Ordering::SeqCst);
    if rate > 0 {
        tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

//! An S3-compatible server that verifies SigV4 signatures (s3s-fs, storing objects
//! as files under a directory), and a TCP proxy in front of it that a test can cut
//! and restore and that counts the bytes sent through it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const S3_ACCESS_KEY: &str = "EDGECAMTESTKEY0001";
pub const S3_SECRET_KEY: &str = "edgecam-test-secret-key-0001";
pub const S3_REGION: &str = "us-east-1";

/// s3s-fs on a free port, on its own thread and runtime.
pub struct S3Server {
    pub port: u16,
    pub root: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl S3Server {
    /// Serves `root`; each directory in it is a bucket (see [`Self::bucket`]).
    pub fn start(root: &Path) -> Self {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use hyper_util::server::conn::auto::Builder as ConnBuilder;
        std::fs::create_dir_all(root).unwrap();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let dir = root.to_owned();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let fs = s3s_fs::FileSystem::new(&dir).unwrap();
                let mut b = s3s::service::S3ServiceBuilder::new(fs);
                b.set_auth(s3s::auth::SimpleAuth::from_single(S3_ACCESS_KEY, S3_SECRET_KEY));
                let service = b.build().into_shared();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                port_tx.send(listener.local_addr().unwrap().port()).unwrap();
                let http = ConnBuilder::new(TokioExecutor::new());
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        accepted = listener.accept() => {
                            let Ok((socket, _)) = accepted else { continue };
                            let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                            tokio::spawn(async move {
                                let _ = conn.await;
                            });
                        }
                    }
                }
            });
        });
        let port = port_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Self {
            port,
            root: root.to_owned(),
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Creates a bucket.
    pub fn bucket(&self, name: &str) {
        std::fs::create_dir_all(self.root.join(name)).unwrap();
    }

    /// Where s3s-fs keeps an object.
    pub fn object(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }

    /// A presigned PUT URL for `bucket/key` through `port` (the server's or a
    /// proxy's), made with aws-sdk-s3's presigner, and the headers it needs.
    pub async fn presigned_put(
        port: u16,
        bucket: &str,
        key: &str,
    ) -> (String, Vec<(String, String)>) {
        use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(S3_REGION))
            .credentials_provider(Credentials::new(
                S3_ACCESS_KEY,
                S3_SECRET_KEY,
                None,
                None,
                "test",
            ))
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .force_path_style(true)
            .build();
        let client = aws_sdk_s3::Client::from_conf(conf);
        let presigned = client
            .put_object()
            .bucket(bucket)
            .key(key)
            .presigned(
                aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(3600))
                    .unwrap(),
            )
            .await
            .unwrap();
        let headers = presigned
            .headers()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        (presigned.uri().to_owned(), headers)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP proxy to `target` on 127.0.0.1 that counts the bytes each way, and can
/// be cut (every connection dropped, new ones refused) and restored, or held
/// (nothing forwarded either way and nothing closed: a silent link) and released.
pub struct Proxy {
    pub port: u16,
    pub sent: Arc<AtomicU64>,
    /// Bytes the server sent to clients.
    pub received: Arc<AtomicU64>,
    cut: Arc<AtomicBool>,
    held: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
    _thread: std::thread::JoinHandle<()>,
}

impl Proxy {
    pub fn start(target: u16) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let r = received.clone();
        let cut = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(AtomicU64::new(0));
        let held = Arc::new(AtomicBool::new(false));
        let (s, c, g, h) = (sent.clone(), cut.clone(), generation.clone(), held.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        continue;
                    };
                    if c.load(Ordering::SeqCst) {
                        continue; // dropped at once
                    }
                    let (s, r, c, g, h) = (s.clone(), r.clone(), c.clone(), g.clone(), h.clone());
                    tokio::spawn(async move {
                        let born = g.load(Ordering::SeqCst);
                        let Ok(mut server) =
                            tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                        else {
                            return;
                        };
                        let (mut cr, mut cw) = client.split();
                        let (mut sr, mut sw) = server.split();
                        let alive =
                            || !c.load(Ordering::SeqCst) && g.load(Ordering::SeqCst) == born;
                        // While held, what was read waits here, unsent.
                        let hold = || async {
                            while h.load(Ordering::SeqCst) && alive() {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        };
                        let up = async {
                            let mut buf = vec![0u8; 64 * 1024];
                            loop {
                                let n = match cr.read(&mut buf).await {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => n,
                                };
                                hold().await;
                                if !alive() {
                                    break;
                                }
                                s.fetch_add(n as u64, Ordering::SeqCst);
                                if sw.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                            let _ = sw.shutdown().await;
                        };
                        let down = async {
                            let mut buf = vec![0u8; 64 * 1024];
                            loop {
                                let n = match sr.read(&mut buf).await {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => n,
                                };
                                hold().await;
                                if !alive() {
                                    break;
                                }
                                r.fetch_add(n as u64, Ordering::SeqCst);
                                if cw.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                            let _ = cw.shutdown().await;
                        };
                        let watch = async {
                            while alive() {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        };
                        tokio::select! {
                            _ = async { tokio::join!(up, down) } => {}
                            _ = watch => {}
                        }
                    });
                }
            });
        });
        Self {
            port,
            sent,
            received,
            cut,
            held,
            generation,
            _thread: thread,
        }
    }

    /// Drops every connection and refuses new ones until [`Self::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Stops forwarding in both directions without closing anything, for
    /// connections open now and made later, until [`Self::release`].
    pub fn hold(&self) {
        self.held.store(true, Ordering::SeqCst);
    }

    /// Forwards again; connections held until now are dropped (their peers gave
    /// them up), later ones work.
    pub fn release(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.held.store(false, Ordering::SeqCst);
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

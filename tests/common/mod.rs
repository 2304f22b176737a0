//! Test harness: real parts, started by the tests on free loopback ports.
//!
//! - [`Pki`]: a CA, a server certificate for 127.0.0.1, a device certificate, and an
//!   unrelated "rogue" CA, made with `openssl` at test time.
//! - [`Broker`]: Mosquitto with a plain loopback listener (for the test's observer)
//!   and a TLS listener that requires a client certificate (the 8883 path).
//! - [`Front`]: haproxy as the AWS-like 443 endpoint: terminates TLS, requires a
//!   client certificate, and drops the connection unless ALPN is `x-amzn-mqtt-ca`.
//! - [`Daemon`]: the edgecam binary with a generated configuration.
//! - [`Observer`]: an MQTT client that records everything edgecam publishes.
#![allow(dead_code)]

pub mod browser;
pub mod demo;
pub mod s3;
pub mod scene;
pub use s3::*;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

pub const CAMERA: &str = "cam-test-1";

/// A `/proc/<pid>/status` field in KiB (`VmRSS:`, `VmHWM:`), 0 when absent.
pub fn status_kb(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) of process `pid` so far, in clock ticks.
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// The UTC start of a recorded segment, from its name (`20261122T043015.123Z.mkv`).
pub fn segment_start(name: &str) -> std::time::SystemTime {
    let s = name.trim_end_matches(".mkv");
    humantime::parse_rfc3339(&format!(
        "{}-{}-{}T{}:{}:{}",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..]
    ))
    .unwrap()
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Waits for `cond` with a deadline; panics with `what` when it passes.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Async flavour of [`wait_for`].
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn wait_port(port: u16, what: &str) {
    wait_for(what, Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// Finds a tool on PATH or in the sbin directories (Debian puts brokers there).
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("{name} is not installed: run `bash tests/run.sh`, which installs it")
    })
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("start a command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Certificates for one test.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn generate(dir: &Path) -> Self {
        let d = dir.join("pki");
        std::fs::create_dir_all(&d).unwrap();
        let ossl = |args: &[&str]| run(Command::new(tool("openssl")).args(args).current_dir(&d));
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        for ca in ["ca", "rogue-ca"] {
            let args = format!(
                "req -x509 {ec} -keyout {ca}.key -out {ca}.pem -days 2 -subj /CN=edgecam-test-{ca}"
            );
            ossl(&args.split(' ').collect::<Vec<_>>());
        }
        std::fs::write(
            d.join("server.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        std::fs::write(
            d.join("client.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        for (name, cn) in [("server", "localhost"), ("client", CAMERA)] {
            let req = format!("req {ec} -keyout {name}.key -out {name}.csr -subj /CN={cn}");
            ossl(&req.split(' ').collect::<Vec<_>>());
            let sign = format!(
                "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {name}.pem -days 2 -extfile {name}.ext"
            );
            ossl(&sign.split(' ').collect::<Vec<_>>());
        }
        // haproxy wants certificate and key in one file.
        let mut bundle = std::fs::read(d.join("server.pem")).unwrap();
        bundle.extend(std::fs::read(d.join("server.key")).unwrap());
        std::fs::write(d.join("server-bundle.pem"), bundle).unwrap();
        Self { dir: d }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Self { child, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait for the exit (bounded).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        None
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Mosquitto with a plain listener and a client-certificate TLS listener.
pub struct Broker {
    pub plain_port: u16,
    pub tls_port: u16,
    /// With [`Broker::start_with_websockets`]: the MQTT-over-WebSocket listener
    /// a browser connects to, and the user name and password it requires.
    pub ws: Option<WsListener>,
    dir: PathBuf,
    conf: PathBuf,
    pub proc: Option<Proc>,
}

/// Mosquitto's WebSocket listener (plain `ws://`, password required).
#[derive(Clone, Debug)]
pub struct WsListener {
    pub port: u16,
    pub username: String,
    pub password: String,
}

impl WsListener {
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }
}

impl Broker {
    pub fn start(dir: &Path, pki: &Pki) -> Self {
        Self::start_opts(dir, pki, false)
    }

    /// As [`Broker::start`], plus a WebSocket listener for browsers. (Debian's
    /// Mosquitto 2.0.11 binds it to every interface whatever address is given, so
    /// it requires a password made here.)
    pub fn start_with_websockets(dir: &Path, pki: &Pki) -> Self {
        Self::start_opts(dir, pki, true)
    }

    fn start_opts(dir: &Path, pki: &Pki, websockets: bool) -> Self {
        let d = dir.join("mosquitto");
        std::fs::create_dir_all(&d).unwrap();
        let (plain_port, tls_port) = (free_port(), free_port());
        let conf = d.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                // Stay the invoking user (root would otherwise switch to
                // `mosquitto`, who cannot read the private temp dir).
                "user {user}\n\
                 per_listener_settings true\n\
                 persistence true\n\
                 persistence_location {dir}/\n\
                 autosave_interval 1\n\
                 max_queued_messages 1000000\n\
                 max_inflight_messages 100\n\
                 log_type error\nlog_type warning\nlog_type notice\n\
                 listener {plain_port} 127.0.0.1\n\
                 allow_anonymous true\n\
                 listener {tls_port} 127.0.0.1\n\
                 allow_anonymous true\n\
                 cafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
                 require_certificate true\n",
                dir = d.display(),
                user = current_user(),
                ca = pki.path("ca.pem").display(),
                cert = pki.path("server.pem").display(),
                key = pki.path("server.key").display(),
            ),
        )
        .unwrap();
        let ws = websockets.then(|| {
            let ws = WsListener {
                port: free_port(),
                username: "console".into(),
                password: format!("pw-{:016x}", rand::random::<u64>()),
            };
            let passwd = d.join("passwd");
            run(Command::new(tool("mosquitto_passwd"))
                .arg("-b")
                .arg("-c")
                .arg(&passwd)
                .arg(&ws.username)
                .arg(&ws.password));
            let mut text = std::fs::read_to_string(&conf).unwrap();
            text.push_str(&format!(
                "listener {} 127.0.0.1\nprotocol websockets\nallow_anonymous false\npassword_file {}\n",
                ws.port,
                passwd.display()
            ));
            std::fs::write(&conf, text).unwrap();
            ws
        });
        let mut b = Self {
            plain_port,
            tls_port,
            ws,
            dir: d,
            conf,
            proc: None,
        };
        b.restart();
        b
    }

    /// Starts (again) on the same ports, with the same persistence file.
    pub fn restart(&mut self) {
        let mut cmd = Command::new(tool("mosquitto"));
        cmd.arg("-c").arg(&self.conf);
        self.proc = Some(Proc::spawn(cmd, self.dir.join("mosquitto.log")));
        wait_port(self.plain_port, "mosquitto's plain listener");
        wait_port(self.tls_port, "mosquitto's TLS listener");
        if let Some(ws) = &self.ws {
            wait_port(ws.port, "mosquitto's WebSocket listener");
        }
    }

    /// Graceful stop (SIGTERM: mosquitto saves its persistence file).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate();
        }
    }
}

/// haproxy as an AWS IoT Core-like endpoint.
pub struct Front {
    pub port: u16,
    dir: PathBuf,
    conf: PathBuf,
    pub proc: Option<Proc>,
}

impl Front {
    pub fn start(dir: &Path, pki: &Pki, broker_plain_port: u16) -> Self {
        let d = dir.join("haproxy");
        std::fs::create_dir_all(&d).unwrap();
        let port = free_port();
        let conf = d.join("haproxy.cfg");
        std::fs::write(
            &conf,
            format!(
                "global\n  maxconn 256\n\
                 defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n\
                 frontend iot\n\
                 \x20 bind 127.0.0.1:{port} ssl crt {bundle} ca-file {ca} verify required alpn x-amzn-mqtt-ca\n\
                 \x20 tcp-request session reject unless {{ ssl_fc_alpn -m str x-amzn-mqtt-ca }}\n\
                 \x20 default_backend mosquitto\n\
                 backend mosquitto\n  server m 127.0.0.1:{broker_plain_port}\n",
                bundle = pki.path("server-bundle.pem").display(),
                ca = pki.path("ca.pem").display(),
            ),
        )
        .unwrap();
        let mut f = Self {
            port,
            dir: d,
            conf,
            proc: None,
        };
        f.restart();
        f
    }

    pub fn restart(&mut self) {
        let mut cmd = Command::new(tool("haproxy"));
        cmd.arg("-db").arg("-f").arg(&self.conf);
        self.proc = Some(Proc::spawn(cmd, self.dir.join("haproxy.log")));
        wait_port(self.port, "haproxy front");
    }

    /// Cuts the network path: every connection through the front is dropped.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }
}

/// haproxy as the AWS IoT credentials provider: HTTPS requiring the device
/// certificate; answers `GET /role-aliases/<alias>/credentials` for the thing named
/// in `x-amzn-iot-thingname` with the test S3 server's key as temporary credentials,
/// and 403 to anything else.
pub struct CredentialsProvider {
    pub port: u16,
    pub proc: Proc,
}

impl CredentialsProvider {
    pub fn start(dir: &Path, pki: &Pki, alias: &str) -> Self {
        let d = dir.join("credentials-provider");
        std::fs::create_dir_all(&d).unwrap();
        let port = free_port();
        let conf = d.join("haproxy.cfg");
        let body = format!(
            r#"{{"credentials":{{"accessKeyId":"{S3_ACCESS_KEY}","secretAccessKey":"{S3_SECRET_KEY}","sessionToken":"test-session-token","expiration":"2099-01-01T00:00:00Z"}}}}"#
        );
        std::fs::write(d.join("answer.json"), body).unwrap();
        std::fs::write(
            &conf,
            format!(
                "global\n  maxconn 64\n\
                 defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
                 frontend creds\n\
                 \x20 bind 127.0.0.1:{port} ssl crt {bundle} ca-file {ca} verify required\n\
                 \x20 http-request deny deny_status 403 unless {{ path /role-aliases/{alias}/credentials }} {{ req.hdr(x-amzn-iot-thingname) -m str {CAMERA} }}\n\
                 \x20 http-request return status 200 content-type application/json file {answer}\n",
                bundle = pki.path("server-bundle.pem").display(),
                ca = pki.path("ca.pem").display(),
                answer = d.join("answer.json").display(),
            ),
        )
        .unwrap();
        let mut cmd = Command::new(tool("haproxy"));
        cmd.arg("-db").arg("-f").arg(&conf);
        let proc = Proc::spawn(cmd, d.join("haproxy.log"));
        wait_port(port, "credentials provider");
        Self { port, proc }
    }
}

/// Options of a generated edgecam configuration.
pub struct DaemonConfig {
    pub port: u16,
    pub alpn: Vec<String>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub state_dir: PathBuf,
    /// Extra TOML appended (sections `[outbox]`, `[mqtt]`, `[synthetic]`, ...).
    pub extra: String,
}

impl DaemonConfig {
    /// Through the ALPN front, with loopback-friendly defaults.
    pub fn via_front(dir: &Path, pki: &Pki, front: &Front) -> Self {
        Self {
            port: front.port,
            alpn: vec!["x-amzn-mqtt-ca".into()],
            ca: pki.path("ca.pem"),
            cert: pki.path("client.pem"),
            key: pki.path("client.key"),
            state_dir: dir.join("state"),
            extra: String::new(),
        }
    }

    /// To a port nothing listens on: the daemon keeps everything in its outbox.
    pub fn offline(dir: &Path, pki: &Pki, extra: &str) -> Self {
        Self {
            port: free_port(),
            alpn: vec!["x-amzn-mqtt-ca".into()],
            ca: pki.path("ca.pem"),
            cert: pki.path("client.pem"),
            key: pki.path("client.key"),
            state_dir: dir.join("state"),
            extra: extra.to_owned(),
        }
    }

    pub fn write(&self, path: &Path) {
        let alpn: Vec<String> = self.alpn.iter().map(|a| format!("{a:?}")).collect();
        let text = format!(
            "[identity]\n\
             camera_id = \"{CAMERA}\"\n\
             broker_host = \"127.0.0.1\"\n\
             broker_port = {}\n\
             alpn = [{}]\n\
             ca_file = \"{}\"\n\
             cert_file = \"{}\"\n\
             key_file = \"{}\"\n\
             [storage]\nstate_dir = \"{}\"\n\
             [log]\nlevel = \"edgecam=debug,info\"\ntarget = \"stderr\"\n\
             {}\n",
            self.port,
            alpn.join(", "),
            self.ca.display(),
            self.cert.display(),
            self.key.display(),
            self.state_dir.display(),
            self.extra,
        );
        std::fs::write(path, text).unwrap();
    }
}

pub fn edgecam() -> Command {
    Command::new(edgecam_bin())
}

/// Runs `edgecam ARGS`; its standard output, after asserting it succeeded.
pub fn edgecam_stdout(args: &[&std::ffi::OsStr]) -> String {
    let out = edgecam().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "edgecam {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The daemon's binary: cargo's for tests and benches; for an example
/// (`target/<profile>/examples/<name>`), the one built beside it.
pub fn edgecam_bin() -> PathBuf {
    if let Some(bin) = option_env!("CARGO_BIN_EXE_edgecam") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("the running executable's path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("edgecam"))
        .filter(|b| b.is_file());
    bin.expect("the edgecam binary beside the example's directory: cargo build --bins first")
}

/// The edgecam daemon.
pub struct Daemon {
    pub config: PathBuf,
    pub proc: Proc,
}

impl Daemon {
    pub fn start(config: &Path, log: &Path) -> Self {
        let mut cmd = edgecam();
        cmd.arg("run").arg("--config").arg(config);
        Self {
            config: config.to_owned(),
            proc: Proc::spawn(cmd, log.to_owned()),
        }
    }

    /// Starts edgecam with extra environment variables.
    pub fn start_env(config: &Path, log: &Path, env: &[(&str, &str)]) -> Self {
        let mut cmd = edgecam();
        cmd.arg("run").arg("--config").arg(config);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self {
            config: config.to_owned(),
            proc: Proc::spawn(cmd, log.to_owned()),
        }
    }

    /// Starts edgecam as systemd would with `Type=notify` and `WatchdogSec`:
    /// NOTIFY_SOCKET, WATCHDOG_USEC, and WATCHDOG_PID naming the daemon itself
    /// (a shell that writes its own pid and then becomes edgecam).
    pub fn start_under_systemd(
        config: &Path,
        log: &Path,
        socket: &Path,
        watchdog_usec: u64,
    ) -> Self {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
            .arg(edgecam_bin())
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("NOTIFY_SOCKET", socket)
            .env("WATCHDOG_USEC", watchdog_usec.to_string());
        Self {
            config: config.to_owned(),
            proc: Proc::spawn(cmd, log.to_owned()),
        }
    }

    pub fn log_text(&self) -> String {
        self.proc.log_text()
    }
}

/// `edgecam outbox stats --json`.
pub fn outbox_stats(config: &Path) -> Value {
    let out = edgecam()
        .args(["outbox", "stats", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "outbox stats: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `edgecam emit`: commits `count` events directly to the outbox.
pub fn emit(config: &Path, count: u64, payload: &str) {
    let out = edgecam()
        .args([
            "emit",
            "--kind",
            "test",
            "--count",
            &count.to_string(),
            "--payload",
            payload,
            "--config",
        ])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "emit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One message received by the observer.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub at: Instant,
    /// Wall clock at arrival, microseconds since the epoch.
    pub wall_us: u128,
}

/// Everything published under `<camera>/#`, seen through the broker's plain listener.
#[derive(Clone)]
pub struct Observer {
    pub messages: Arc<Mutex<Vec<Received>>>,
    /// seq → event_ids seen for it, kept up to date as batches arrive (so waiting
    /// for deliveries is cheap and does not delay the receiving loop).
    seen: Arc<Mutex<BTreeMap<i64, Vec<String>>>>,
    client: AsyncClient,
}

#[derive(serde::Deserialize)]
struct WireBatch {
    events: Vec<WireEvent>,
}

#[derive(serde::Deserialize)]
struct WireEvent {
    seq: i64,
    event_id: String,
}

impl Observer {
    /// Subscribes with a persistent session (`id` fixed), so messages published while
    /// the broker restarts are queued for us.
    pub async fn start(port: u16, id: &str) -> Self {
        Self::subscribe(port, id, &format!("{CAMERA}/#"), false).await
    }

    /// Records what arrives on `filter`; with `clean`, a new session (the
    /// broker's retained messages arrive first, flagged retained).
    pub async fn subscribe(port: u16, id: &str, filter: &str, clean: bool) -> Self {
        let filter = filter.to_owned();
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_clean_session(clean)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(4 << 20, 4 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let messages = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let sink = messages.clone();
        let seen_sink = seen.clone();
        let events_prefix = format!("{CAMERA}/events/");
        let sub = client.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = sub.subscribe(filter.clone(), QoS::AtLeastOnce).await;
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if p.topic.starts_with(&events_prefix) {
                            let batch: WireBatch =
                                serde_json::from_slice(&p.payload).expect("event batch is JSON");
                            let mut seen = seen_sink.lock().unwrap();
                            for ev in batch.events {
                                seen.entry(ev.seq)
                                    .or_insert_with(Vec::new)
                                    .push(ev.event_id);
                            }
                        }
                        sink.lock().unwrap().push(Received {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                            at: Instant::now(),
                            wall_us: std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .unwrap()
                                .as_micros(),
                        })
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("observer subscribed in time")
            .unwrap();
        Self {
            messages,
            seen,
            client,
        }
    }

    pub fn all(&self) -> Vec<Received> {
        self.messages.lock().unwrap().clone()
    }

    /// Event batches, in arrival order.
    pub fn batches(&self) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|m| m.topic.starts_with(&format!("{CAMERA}/events/")))
            .collect()
    }

    /// Every event received: seq → event_ids seen for it (one per delivery).
    pub fn events(&self) -> BTreeMap<i64, Vec<String>> {
        self.seen.lock().unwrap().clone()
    }

    pub fn distinct_events(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Status messages (`<camera>/status`), parsed.
    pub fn statuses(&self) -> Vec<Value> {
        self.all()
            .into_iter()
            .filter(|m| m.topic == format!("{CAMERA}/status"))
            .map(|m| serde_json::from_slice(&m.payload).unwrap())
            .collect()
    }

    /// Metrics messages, parsed.
    pub fn metrics(&self) -> Vec<Value> {
        self.all()
            .into_iter()
            .filter(|m| m.topic == format!("{CAMERA}/status/metrics"))
            .map(|m| serde_json::from_slice(&m.payload).unwrap())
            .collect()
    }

    /// Publishes a message (QoS 1, not retained).
    pub async fn publish(&self, topic: &str, payload: &[u8]) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await
            .unwrap();
    }

    /// Publishes a file request (QoS 1) to `<camera>/file/request`.
    pub async fn file_request(&self, body: Value) {
        self.publish(
            &format!("{CAMERA}/file/request"),
            body.to_string().as_bytes(),
        )
        .await;
    }

    /// File responses (`<camera>/file/response`), parsed, in order.
    pub fn file_responses(&self) -> Vec<Value> {
        self.all()
            .into_iter()
            .filter(|m| m.topic == format!("{CAMERA}/file/response"))
            .map(|m| serde_json::from_slice(&m.payload).unwrap())
            .collect()
    }

    /// The responses to requests without a readable id.
    pub fn responses_for_null(&self) -> Vec<Value> {
        self.file_responses()
            .into_iter()
            .filter(|r| r["request_id"].is_null())
            .collect()
    }

    /// The responses about one request.
    pub fn responses_for(&self, request_id: &str) -> Vec<Value> {
        self.file_responses()
            .into_iter()
            .filter(|r| r["request_id"] == request_id)
            .collect()
    }

    /// Publishes a retained message (QoS 1) and waits until it comes back through our
    /// own subscription, so the broker holds it.
    pub async fn publish_retained(&self, topic: &str, payload: &[u8]) {
        let before = self.all().iter().filter(|m| m.topic == topic).count();
        self.client
            .publish(topic, QoS::AtLeastOnce, true, payload.to_vec())
            .await
            .unwrap();
        if topic.starts_with(&format!("{CAMERA}/")) {
            wait_until(
                "our own publish to come back",
                Duration::from_secs(10),
                || self.all().iter().filter(|m| m.topic == topic).count() > before,
            )
            .await;
        }
    }

    /// Configuration status messages (`<camera>/config/status`), parsed, in order.
    pub fn config_statuses(&self) -> Vec<Value> {
        self.all()
            .into_iter()
            .filter(|m| m.topic == format!("{CAMERA}/config/status"))
            .map(|m| serde_json::from_slice(&m.payload).unwrap())
            .collect()
    }

    /// Waits until the camera says it applied configuration `version`.
    pub async fn wait_config_applied(&self, version: u64) {
        wait_until(
            &format!("configuration version {version} applied"),
            Duration::from_secs(15),
            || {
                self.config_statuses()
                    .iter()
                    .any(|s| s["state"] == "applied" && s["version"] == version)
            },
        )
        .await;
    }

    /// Every event received on `<camera>/events/<kind>` (redeliveries included), in
    /// arrival order.
    pub fn events_in(&self, kind: &str) -> Vec<Value> {
        let topic = format!("{CAMERA}/events/{kind}");
        self.all()
            .into_iter()
            .filter(|m| m.topic == topic)
            .flat_map(|m| {
                serde_json::from_slice::<Value>(&m.payload).unwrap()["events"]
                    .as_array()
                    .unwrap()
                    .clone()
            })
            .collect()
    }

    /// How many events were received on `<camera>/events/<kind>`.
    pub fn events_of_kind(&self, kind: &str) -> usize {
        self.events_in(kind).len()
    }

    /// Forgets what was received so far.
    pub fn clear(&self) {
        self.messages.lock().unwrap().clear();
        self.seen.lock().unwrap().clear();
    }

    pub async fn stop(self) {
        let _ = self.client.disconnect().await;
    }
}

/// A validator for one of the schemas in `docs/schemas/`.
pub fn schema(name: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/schemas")
        .join(name);
    let schema: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Validates every message received against its JSON Schema in `docs/schemas/`;
/// returns how many messages of each schema were checked.
pub fn assert_schemas(observer: &Observer) -> BTreeMap<&'static str, usize> {
    let load = |name: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs/schemas")
            .join(name);
        let schema: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let batch = load("event-batch.json");
    let status = load("status.json");
    let metrics = load("metrics.json");
    let config_status = load("config-status.json");
    let file_request = load("file-request.json");
    let file_response = load("file-response.json");
    let mut checked = BTreeMap::new();
    for m in observer.all() {
        if m.topic == format!("{CAMERA}/config") {
            continue; // what the test itself sent, good and bad on purpose
        }
        if m.topic == format!("{CAMERA}/file/request") {
            // What the test sent: checked only when it is meant to be valid.
            let value: Option<Value> = serde_json::from_slice(&m.payload).ok();
            if value.as_ref().is_some_and(|v| file_request.is_valid(v)) {
                *checked.entry("file-request").or_insert(0) += 1;
            }
            continue;
        }
        let (name, validator) = if m.topic == format!("{CAMERA}/config/status") {
            ("config-status", &config_status)
        } else if m.topic == format!("{CAMERA}/status") {
            ("status", &status)
        } else if m.topic == format!("{CAMERA}/status/metrics") {
            ("metrics", &metrics)
        } else if m.topic == format!("{CAMERA}/file/response") {
            ("file-response", &file_response)
        } else if m.topic.starts_with(&format!("{CAMERA}/events/")) {
            ("event-batch", &batch)
        } else {
            panic!("unexpected topic {}", m.topic);
        };
        let value: Value = serde_json::from_slice(&m.payload).expect("payload is JSON");
        if let Err(e) = validator.validate(&value) {
            panic!("{} breaks {name}.json: {e}\n{value}", m.topic);
        }
        *checked.entry(name).or_insert(0) += 1;
    }
    checked
}

/// Asserts every seq in `first..=last` arrived and that repeated deliveries of a
/// seq always carry the same event_id.
pub fn assert_complete(events: &BTreeMap<i64, Vec<String>>, first: i64, last: i64) {
    let missing: Vec<i64> = (first..=last).filter(|s| !events.contains_key(s)).collect();
    assert!(
        missing.is_empty(),
        "{} events missing, first few: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    for (seq, ids) in events {
        assert!(
            ids.iter().all(|id| id == &ids[0]),
            "seq {seq} delivered with different event_ids: {ids:?}"
        );
    }
}

/// A whole setup: certificates, broker, AWS-like front, observer, and an edgecam
/// configuration through the front (fast reconnects, plus `extra` TOML).
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub pki: Pki,
    pub broker: Broker,
    pub front: Front,
    pub observer: Observer,
    pub config: PathBuf,
}

impl Rig {
    /// `extra` may open with `[mqtt]` fields: it follows the `[mqtt]` header.
    pub async fn new(name: &str, extra: &str) -> Self {
        Self::new_opts(name, extra, false).await
    }

    /// As [`Rig::new`], the broker with a WebSocket listener for a browser.
    pub async fn with_websockets(name: &str, extra: &str) -> Self {
        Self::new_opts(name, extra, true).await
    }

    async fn new_opts(name: &str, extra: &str, websockets: bool) -> Self {
        let dir = test_dir(name);
        let pki = Pki::generate(dir.path());
        let broker = if websockets {
            Broker::start_with_websockets(dir.path(), &pki)
        } else {
            Broker::start(dir.path(), &pki)
        };
        let front = Front::start(dir.path(), &pki, broker.plain_port);
        let observer = Observer::start(broker.plain_port, &format!("observer-{name}")).await;
        let mut cfg = DaemonConfig::via_front(dir.path(), &pki, &front);
        cfg.extra = format!("[mqtt]\nbackoff_min = \"50ms\"\nbackoff_max = \"500ms\"\n{extra}");
        let config = dir.path().join("edgecam.toml");
        cfg.write(&config);
        Self {
            dir,
            pki,
            broker,
            front,
            observer,
            config,
        }
    }

    /// Starts edgecam, logging to `edgecam-<n>.log`.
    pub fn daemon(&self, n: usize) -> Daemon {
        Daemon::start(
            &self.config,
            &self.dir.path().join(format!("edgecam-{n}.log")),
        )
    }

    /// Starts edgecam with the test S3 server's credentials in its environment
    /// (the standard AWS chain reads them).
    pub fn daemon_with_s3_credentials(&self, n: usize) -> Daemon {
        Daemon::start_env(
            &self.config,
            &self.dir.path().join(format!("edgecam-{n}.log")),
            &[
                ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY),
                ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ],
        )
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Points `[video] recordings_dir` (the `[video]` section must be in `extra`)
    /// into the test's directory; returns it.
    pub fn recordings(&self) -> PathBuf {
        let dir = self.path().join("recordings");
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(text.contains("[video]\n"), "no [video] section to extend");
        let text = text.replace(
            "[video]\n",
            &format!("[video]\nrecordings_dir = \"{}\"\n", dir.display()),
        );
        std::fs::write(&self.config, text).unwrap();
        dir
    }
}

/// A rustls client configuration trusting the test CA, with the device certificate
/// or none, offering `alpn`.
pub fn client_tls(pki: &Pki, with_cert: bool, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(pki.path("ca.pem")).unwrap();
    for c in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = if with_cert {
        let cert = std::fs::read(pki.path("client.pem")).unwrap();
        let key = std::fs::read(pki.path("client.key")).unwrap();
        let certs = rustls_pemfile::certs(&mut cert.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut key.as_slice())
            .unwrap()
            .unwrap();
        builder.with_client_auth_cert(certs, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    cfg.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    Arc::new(cfg)
}

/// The busiest `window` of arrivals: (publishes, bytes of payload + topic).
pub fn busiest_window(messages: &[Received], window: Duration) -> (usize, usize) {
    let mut busiest = (0, 0);
    for (i, first) in messages.iter().enumerate() {
        let in_window = messages[i..]
            .iter()
            .take_while(|m| m.at.duration_since(first.at) < window);
        let (n, bytes) = in_window.fold((0, 0), |(n, b), m| {
            (n + 1, b + m.payload.len() + m.topic.len())
        });
        busiest = (busiest.0.max(n), busiest.1.max(bytes));
    }
    busiest
}

/// A GStreamer RTSP server on a loopback port, serving H.264 test video with a
/// clock at `/cam`, running its own GLib main loop on a thread.
pub struct RtspServer {
    main_loop: gstreamer::glib::MainLoop,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RtspServer {
    /// Serves `width`x`height` at `fps` (H.264, a keyframe a second).
    pub fn start_with(port: u16, width: u32, height: u32, fps: u32) -> Self {
        Self::serve(port, &Self::test_video(width, height, fps), None)
    }

    /// Serves an MP4 file's H.264 as it is, once, at its own pace: nothing is
    /// encoded on this machine while it plays, as with a camera's own encoder.
    #[allow(dead_code)]
    pub fn start_file(port: u16, mp4: &Path) -> Self {
        Self::serve(
            port,
            &format!(
                "( filesrc location=\"{}\" ! qtdemux ! h264parse config-interval=-1 ! \
                 rtph264pay name=pay0 pt=96 )",
                mp4.display()
            ),
            None,
        )
    }

    fn test_video(width: u32, height: u32, fps: u32) -> String {
        format!(
            "( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate={fps}/1 ! \
             clockoverlay ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} ! \
             rtph264pay name=pay0 pt=96 )"
        )
    }

    /// 640x360 at 15 fps to clients that log in as `user` with `password` (basic
    /// authentication) only.
    pub fn start_with_login(port: u16, user: &str, password: &str) -> Self {
        Self::serve(
            port,
            &Self::test_video(640, 360, 15),
            Some((user.to_owned(), password.to_owned())),
        )
    }

    fn serve(port: u16, launch: &str, login: Option<(String, String)>) -> Self {
        use gstreamer_rtsp_server as rtsp;
        use gstreamer_rtsp_server::prelude::*;
        gstreamer::init().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let launch = launch.to_owned();
        let thread = std::thread::spawn(move || {
            let ctx = gstreamer::glib::MainContext::new();
            ctx.with_thread_default(|| {
                let main_loop = gstreamer::glib::MainLoop::new(Some(&ctx), false);
                let server = rtsp::RTSPServer::new();
                server.set_address("127.0.0.1");
                server.set_service(&port.to_string());
                let factory = rtsp::RTSPMediaFactory::new();
                factory.set_launch(&launch);
                factory.set_shared(true);
                if let Some((user, password)) = &login {
                    let auth = rtsp::RTSPAuth::new();
                    let token = rtsp::RTSPToken::builder()
                        .field(rtsp::RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
                        .build();
                    auth.add_basic(&rtsp::RTSPAuth::make_basic(user, password), &token);
                    server.set_auth(Some(&auth));
                    factory.add_role_from_structure(
                        &gstreamer::Structure::builder("viewer")
                            .field(rtsp::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                            .field(rtsp::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                            .build(),
                    );
                }
                server.mount_points().unwrap().add_factory("/cam", factory);
                let source = server.attach(Some(&ctx)).unwrap();
                tx.send(main_loop.clone()).unwrap();
                main_loop.run();
                // Stopped: drop every client and stop listening.
                server.client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
                if let Some(source) = ctx.find_source_by_id(&source) {
                    source.destroy();
                }
            })
            .unwrap();
        });
        let main_loop = rx.recv().unwrap();
        wait_for("the RTSP server to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self {
            main_loop,
            thread: Some(thread),
        }
    }

    /// 640x360 at 15 fps.
    pub fn start(port: u16) -> Self {
        Self::start_with(port, 640, 360, 15)
    }

    pub fn stop(mut self) {
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// A temp dir for one test, removed at its end unless `EDGECAM_KEEP_TEST_DIRS` is
/// set (to read the logs of every process the test started).
pub fn test_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("edgecam-{name}-"))
        .disable_cleanup(std::env::var_os("EDGECAM_KEEP_TEST_DIRS").is_some())
        .tempdir()
        .unwrap()
}

/// Writes `frames` RGB frames of `width` x `height` (rows unpadded: width a multiple
/// of 4) made by `frame(i)` as H.264 in MP4 at `fps`.
pub fn encode_video(
    path: &Path,
    (width, height, fps): (usize, usize, usize),
    frames: usize,
    frame: impl Fn(usize) -> Vec<u8>,
) {
    use gstreamer as gst;
    use gstreamer::prelude::*;
    gst::init().unwrap();
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time caps=video/x-raw,format=RGB,width={width},height={height},framerate={fps}/1 ! \
         videoconvert ! x264enc speed-preset=ultrafast key-int-max={fps} ! h264parse ! mp4mux ! \
         filesink location=\"{}\"",
        path.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gstreamer_app::AppSrc>()
        .unwrap();
    src.set_property("block", true);
    pipeline.set_state(gst::State::Playing).unwrap();
    for i in 0..frames {
        let mut buffer = gst::Buffer::from_mut_slice(frame(i));
        {
            let b = buffer.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_mseconds((i * 1000 / fps) as u64));
            b.set_duration(gst::ClockTime::from_mseconds((1000 / fps) as u64));
        }
        src.push_buffer(buffer).unwrap();
    }
    src.end_of_stream().unwrap();
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(120),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap();
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
}

/// What a daemon benchmark needs: its seconds per run (`var`, else `default`),
/// the models directory (`EDGECAM_TEST_MODELS`, else target/models) and a
/// two-worker runtime, like the camera's.
pub fn bench_setup(var: &str, default: u64) -> (u64, PathBuf, tokio::runtime::Runtime) {
    let secs = std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let models = std::env::var_os("EDGECAM_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/models"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    (secs, models, rt)
}

/// A benchmark's measuring window on a running daemon: the last metrics before and
/// after `secs` seconds, the daemon's CPU over them (cores), and the seconds
/// between the two metrics messages.
pub async fn bench_window(observer: &Observer, pid: i32, secs: u64) -> (Value, Value, f64, f64) {
    let m0 = observer.metrics().last().unwrap().clone();
    let ticks0 = cpu_ticks(pid);
    let t0 = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let m1 = observer.metrics().last().unwrap().clone();
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(pid) - ticks0) as f64
        / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
        / elapsed;
    let span = (m1["ts"].as_i64().unwrap() - m0["ts"].as_i64().unwrap()) as f64 / 1000.0;
    (m0, m1, cpu, span)
}

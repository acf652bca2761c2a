//! The real `monitoring-rs` binary as a child process on a free loopback
//! port: started, waited for, signalled and reaped in one place for every
//! test and bench.

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `GET path` over a plain socket (no client library, so it works from any
/// test thread): the status code and the body, or `None` if nothing
/// answered.
pub fn get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: monitoring-rs\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.get(9..12)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_owned()))
}

/// A free TCP port on `ip`, as the kernel hands it out.
pub fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A TCP port free on every one of `ips` (an EndpointSlice names one port
/// for all its endpoints, so daemons of one Service share it).
pub fn free_port_on_all(ips: &[IpAddr]) -> u16 {
    for _ in 0..100 {
        let port = free_port(ips[0]);
        if ips.iter().all(|ip| TcpListener::bind((*ip, port)).is_ok()) {
            return port;
        }
    }
    panic!("no port is free on all of {ips:?}")
}

/// How to start a daemon: the binary, its flags, where it listens.
pub struct DaemonCommand {
    command: Command,
    ip: IpAddr,
    port: Option<u16>,
    wait: Duration,
}

impl DaemonCommand {
    /// The binary at `binary` (a test passes `env!("CARGO_BIN_EXE_monitoring-rs")`),
    /// logging warnings only, its standard output discarded.
    pub fn new(binary: impl AsRef<OsStr>) -> Self {
        let mut command = Command::new(binary);
        command.env("RUST_LOG", "warn").stdout(Stdio::null());
        Self {
            command,
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: None,
            wait: Duration::from_secs(30),
        }
    }

    /// The Kubernetes collector as node `node-1` of a stand-in cluster:
    /// `node`'s container logs, the fake API server behind `kubeconfig`,
    /// the store in `data`. Tests add their own timings and `--auth`.
    pub fn kubernetes(
        self,
        node: &crate::kubelet::Node,
        kubeconfig: &std::path::Path,
        data: &std::path::Path,
    ) -> Self {
        self.kubernetes_as("node-1", node, kubeconfig, data)
    }

    /// [`kubernetes`](Self::kubernetes) as the node named `name`.
    pub fn kubernetes_as(
        self,
        name: &str,
        node: &crate::kubelet::Node,
        kubeconfig: &std::path::Path,
        data: &std::path::Path,
    ) -> Self {
        self.args(["--log-collector", "kubernetes", "--node-name", name])
            .flag("--root-path", node.containers())
            .flag("--kubeconfig", kubeconfig)
            .flag("--data-directory", data)
    }

    /// Adds flags.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    /// Adds one flag with its value.
    pub fn flag(mut self, name: &str, value: impl AsRef<OsStr>) -> Self {
        self.command.arg(name).arg(value);
        self
    }

    /// Sets `RUST_LOG`.
    pub fn log(mut self, filter: &str) -> Self {
        self.command.env("RUST_LOG", filter);
        self
    }

    /// Discards standard error too (benches, where logs would skew figures).
    pub fn quiet(mut self) -> Self {
        self.command.stderr(Stdio::null());
        self
    }

    /// Listens on `ip` (another loopback address for a second host).
    pub fn on(mut self, ip: IpAddr) -> Self {
        self.ip = ip;
        self
    }

    /// Listens on this port instead of a fresh one (a restart keeps its address).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Starts the daemon and returns at once: a test that kills it at any
    /// moment, start-up included, uses this.
    pub fn spawn(mut self) -> Daemon {
        let address = SocketAddr::new(self.ip, self.port.unwrap_or_else(|| free_port(self.ip)));
        let child = self
            .command
            .arg("--listen")
            .arg(address.to_string())
            .spawn()
            .expect("monitoring-rs starts");
        Daemon { child, address }
    }

    /// Starts the daemon and waits until its API accepts connections.
    pub fn start(self) -> Daemon {
        let (wait, mut daemon) = (self.wait, self.spawn());
        let address = daemon.address;
        let deadline = Instant::now() + wait;
        while TcpStream::connect(address).is_err() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("monitoring-rs exited before it served its API: {status}");
            }
            assert!(Instant::now() < deadline, "monitoring-rs did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }
}

/// A running daemon; killed and reaped when dropped.
pub struct Daemon {
    child: Child,
    address: SocketAddr,
}

impl Daemon {
    /// `http://ip:port`, the base of every API URL.
    pub fn base(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Where the API listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `GET path` on the daemon's API (see [`get`]).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        get(self.address, path)
    }

    /// The process id (for /proc figures).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits for the exit: the graceful shutdown path.
    pub fn terminate(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.child.wait().expect("monitoring-rs is reaped")
    }

    /// SIGKILL, then waits: a crash at an arbitrary moment.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal(&self, signal: i32) {
        // SAFETY: a signal to our own child, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Log output of ten kinds of real application, for corpora that look like
//! a cluster's: Java/Spring (with stack-trace bursts), Go zap JSON, nginx
//! and Istio access logs, Python logging (with tracebacks), Node pino JSON,
//! logfmt, Redis, Kubernetes controllers (klog) and PostgreSQL.
//!
//! Each [`App`] is one container's process: it keeps its own state (request
//! ids, pool of clients, a traceback in progress) so its lines repeat the
//! way real ones do — the same few templates, fields from pools of
//! realistic size, high-entropy ids where real logs have them — and now and
//! then a long line (a request body, a serialised object) of up to 40 KiB,
//! which the kubelet writes as `P` pieces.

use std::collections::VecDeque;
use std::io::Write;

use crate::messages::Rng;

/// What kind of application a container runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Spring Boot's default console pattern; exceptions with `at` lines.
    Spring,
    /// Go with zap's production JSON encoder.
    Zap,
    /// nginx's `combined` access log, errors on stderr.
    Nginx,
    /// Istio's Envoy sidecar, default text access log.
    Istio,
    /// Python `logging` to stderr, with tracebacks.
    Python,
    /// Node.js pino JSON.
    Pino,
    /// A Go service logging logfmt (go-kit / logrus text).
    Logfmt,
    /// Redis server.
    Redis,
    /// A Kubernetes controller (klog text format, stderr).
    Controller,
    /// PostgreSQL with `log_min_duration_statement`.
    Postgres,
}

impl Profile {
    /// A name for a workload running it (a pod's `app` label).
    pub fn app_name(self) -> &'static str {
        match self {
            Profile::Spring => "orders",
            Profile::Zap => "catalog",
            Profile::Nginx => "web",
            Profile::Istio => "gateway",
            Profile::Python => "worker",
            Profile::Pino => "frontend",
            Profile::Logfmt => "inventory",
            Profile::Redis => "redis",
            Profile::Controller => "operator",
            Profile::Postgres => "postgres",
        }
    }
}

/// Every profile, in a fixed order.
pub const PROFILES: [Profile; 10] = [
    Profile::Spring,
    Profile::Zap,
    Profile::Nginx,
    Profile::Istio,
    Profile::Python,
    Profile::Pino,
    Profile::Logfmt,
    Profile::Redis,
    Profile::Controller,
    Profile::Postgres,
];

const PATHS: &[&str] = &[
    "/api/v1/orders",
    "/api/v1/orders/{id}",
    "/api/v1/users/{id}",
    "/api/v1/users/{id}/cart",
    "/api/v1/products",
    "/api/v1/products/{id}",
    "/api/v1/search",
    "/api/v2/checkout",
    "/api/v2/payments/{id}",
    "/healthz",
    "/readyz",
    "/metrics",
    "/static/js/main.{id}.js",
    "/static/css/app.css",
    "/login",
    "/graphql",
];
const METHODS: &[&str] = &["GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE"];
const STATUS: &[u16] = &[
    200, 200, 200, 200, 200, 200, 200, 200, 201, 204, 304, 301, 400, 401, 404, 404, 429, 500, 502,
    503,
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "kube-probe/1.31",
    "Prometheus/2.55.1",
    "curl/8.5.0",
    "okhttp/4.12.0",
    "Go-http-client/1.1",
    "python-requests/2.32.3",
];
const SERVICES: &[&str] = &[
    "orders", "users", "catalog", "payments", "cart", "search", "auth", "shipping",
];
const JAVA_CLASSES: &[&str] = &[
    "c.e.orders.web.OrderController",
    "c.e.orders.service.OrderService",
    "c.e.orders.repo.OrderRepository",
    "o.s.web.servlet.DispatcherServlet",
    "o.h.engine.jdbc.spi.SqlExceptionHelper",
    "c.zaxxer.hikari.pool.HikariPool",
    "o.a.kafka.clients.consumer.KafkaConsumer",
    "c.e.orders.client.PaymentClient",
];
const GO_CALLERS: &[&str] = &[
    "server/handler.go",
    "server/middleware.go",
    "store/postgres.go",
    "cache/redis.go",
    "worker/queue.go",
    "grpc/interceptor.go",
];
const WORDS: &[&str] = &[
    "request",
    "handled",
    "cache",
    "refreshed",
    "miss",
    "upstream",
    "connection",
    "reset",
    "retry",
    "scheduled",
    "batch",
    "processed",
    "token",
    "expired",
    "session",
    "created",
    "query",
    "slow",
    "message",
    "published",
    "consumer",
    "rebalanced",
    "lease",
    "renewed",
    "timeout",
    "exceeded",
];
const SQL: &[&str] = &[
    "SELECT id, customer_id, status, total FROM orders WHERE customer_id = $1 ORDER BY created_at DESC LIMIT 20",
    "UPDATE inventory SET quantity = quantity - $1 WHERE product_id = $2 AND quantity >= $1",
    "INSERT INTO events (id, kind, payload, created_at) VALUES ($1, $2, $3, now())",
    "SELECT p.id, p.name, p.price FROM products p JOIN categories c ON c.id = p.category_id WHERE c.slug = $1",
    "DELETE FROM sessions WHERE expires_at < now()",
];
const KINDS: &[&str] = &[
    "deployment",
    "replicaset",
    "statefulset",
    "job",
    "endpointslice",
    "service",
];

/// Wall-clock parts of one second, formatted once per second.
#[derive(Default)]
struct Clock {
    second: i64,
    /// 2026-12-02
    date: String,
    /// 07:23:00
    time: String,
    /// 1202 (klog's month and day)
    klog_day: String,
    /// 02 Dec 2026 (Redis)
    redis_date: String,
    /// 02/Dec/2026 (nginx)
    access_date: String,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl Clock {
    fn at(&mut self, ns: i64) {
        let second = ns.div_euclid(1_000_000_000);
        if second == self.second && !self.date.is_empty() {
            return;
        }
        self.second = second;
        let days = second.div_euclid(86_400);
        let secs = second.rem_euclid(86_400);
        let (y, m, d) = civil(days);
        self.date = format!("{y:04}-{m:02}-{d:02}");
        self.time = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
        self.klog_day = format!("{m:02}{d:02}");
        let month = MONTHS[(m - 1) as usize];
        self.redis_date = format!("{d:02} {month} {y:04}");
        self.access_date = format!("{d:02}/{month}/{y:04}");
    }
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
pub fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// One container's application: call [`App::line`] for each record it
/// writes.
pub struct App {
    profile: Profile,
    rng: Rng,
    clock: Clock,
    /// Lines of a multi-line event (stack trace) still to be written, with
    /// their stream.
    pending: VecDeque<(&'static str, Vec<u8>)>,
    /// This instance's pod IP and its small pool of clients and peers.
    ip: [u8; 2],
    clients: Vec<[u8; 4]>,
    pid: u32,
    hostname: String,
    thread: u32,
}

impl App {
    /// The application `profile`, seeded so every corpus is the same.
    pub fn new(profile: Profile, seed: u64) -> Self {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let clients = (0..40)
            .map(|_| {
                [
                    10,
                    rng.below(4) as u8,
                    rng.below(256) as u8,
                    rng.below(254) as u8 + 1,
                ]
            })
            .collect();
        let hostname = format!(
            "{}-{:x}-{}",
            SERVICES[rng.below(SERVICES.len() as u64) as usize],
            0x5d00_0000 + rng.below(0xff_ffff),
            suffix(&mut rng)
        );
        Self {
            profile,
            ip: [rng.below(4) as u8, rng.below(256) as u8],
            clients,
            pid: 1 + rng.below(40) as u32,
            hostname,
            thread: 0,
            rng,
            clock: Clock::default(),
            pending: VecDeque::new(),
        }
    }

    /// The profile it logs as.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Writes the next record, as logged at `ns`, to `out` (cleared first);
    /// returns its stream ("stdout" or "stderr").
    pub fn line(&mut self, ns: i64, out: &mut Vec<u8>) -> &'static str {
        out.clear();
        if let Some((stream, line)) = self.pending.pop_front() {
            out.extend_from_slice(&line);
            return stream;
        }
        self.clock.at(ns);
        let ms = ns.rem_euclid(1_000_000_000) / 1_000_000;
        let us = ns.rem_euclid(1_000_000_000) / 1_000;
        match self.profile {
            Profile::Spring => self.spring(ms, out),
            Profile::Zap => self.zap(ns, out),
            Profile::Nginx => self.nginx(ms, out),
            Profile::Istio => self.istio(ms, out),
            Profile::Python => self.python(ms, out),
            Profile::Pino => self.pino(ns, out),
            Profile::Logfmt => self.logfmt(ms, out),
            Profile::Redis => self.redis(ms, out),
            Profile::Controller => self.controller(us, out),
            Profile::Postgres => self.postgres(ms, out),
        }
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.rng.below(from.len() as u64) as usize]
    }

    /// A path with its `{id}` filled in.
    fn path(&mut self) -> String {
        let path = self.pick(PATHS);
        if path.contains("{id}") {
            let id = if path.starts_with("/static") {
                format!("{:08x}", 0x3a9f_0000u32 + self.rng.below(4) as u32)
            } else {
                (1000 + self.rng.below(90_000)).to_string()
            };
            path.replace("{id}", &id)
        } else {
            path.to_string()
        }
    }

    fn client(&mut self) -> [u8; 4] {
        // A few clients make most requests.
        let n = self.clients.len() as u64;
        let i = self.rng.below(n).min(self.rng.below(n));
        self.clients[i as usize]
    }

    fn uuid(&mut self) -> String {
        let (a, b) = (self.rng.next_u64(), self.rng.next_u64());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }

    fn words(&mut self, n: u64, out: &mut Vec<u8>) {
        for i in 0..n {
            if i > 0 {
                out.push(b' ');
            }
            let w = self.pick(WORDS);
            out.extend_from_slice(w.as_bytes());
        }
    }

    /// Once in a while a line carries a large payload (a request body, a
    /// serialised object): 1–40 KiB of JSON-ish text.
    fn payload(&mut self, out: &mut Vec<u8>) {
        let target = 1024 + self.rng.below(40 * 1024) as usize;
        let start = out.len();
        out.extend_from_slice(b"[");
        while out.len() - start < target {
            let id = self.rng.below(1_000_000);
            let sku = self.rng.below(5000);
            let qty = 1 + self.rng.below(5);
            let price = self.rng.below(20_000);
            write!(
                out,
                "{{\"id\":{id},\"sku\":\"SKU-{sku:05}\",\"qty\":{qty},\"price\":{}.{:02}}},",
                price / 100,
                price % 100
            )
            .unwrap();
        }
        out.pop();
        out.extend_from_slice(b"]");
    }

    fn spring(&mut self, ms: i64, out: &mut Vec<u8>) -> &'static str {
        let roll = self.rng.below(1000);
        let level = match roll {
            0..=14 => "ERROR",
            15..=59 => " WARN",
            60..=119 => "DEBUG",
            _ => " INFO",
        };
        if self.rng.below(3) == 0 {
            self.thread = 1 + self.rng.below(200) as u32 % 10;
        }
        let class = self.pick(JAVA_CLASSES);
        write!(
            out,
            "{} {}.{ms:03} {level} {} --- [nio-8080-exec-{}] {class:<40} : ",
            self.clock.date, self.clock.time, self.pid, self.thread
        )
        .unwrap();
        match roll {
            0..=14 => {
                let id = self.rng.below(10_000_000);
                write!(out, "Failed to process order {id}").unwrap();
                self.stack_trace();
            }
            15..=59 => {
                let ms = 1000 + self.rng.below(9000);
                write!(
                    out,
                    "HikariPool-1 - Thread starvation or clock leap detected (housekeeper delta={ms}ms)."
                )
                .unwrap();
            }
            60..=119 => {
                out.extend_from_slice(b"Request payload: ");
                if self.rng.below(10) == 0 {
                    self.payload(out);
                } else {
                    let id = self.rng.below(100_000);
                    write!(out, "{{\"customerId\":{id},\"items\":[]}}").unwrap();
                }
            }
            _ => {
                let (order, customer, took) = (
                    self.rng.below(10_000_000),
                    self.rng.below(100_000),
                    1 + self.rng.below(400),
                );
                write!(
                    out,
                    "Order {order} placed for customer {customer} in {took} ms"
                )
                .unwrap();
            }
        }
        "stdout"
    }

    fn stack_trace(&mut self) {
        const FRAMES: &[&str] = &[
            "com.example.orders.service.OrderService.place(OrderService.java:{n})",
            "com.example.orders.web.OrderController.create(OrderController.java:{n})",
            "java.base/jdk.internal.reflect.DirectMethodHandleAccessor.invoke(DirectMethodHandleAccessor.java:103)",
            "java.base/java.lang.reflect.Method.invoke(Method.java:580)",
            "org.springframework.web.method.support.InvocableHandlerMethod.doInvoke(InvocableHandlerMethod.java:255)",
            "org.springframework.web.servlet.mvc.method.annotation.ServletInvocableHandlerMethod.invokeAndHandle(ServletInvocableHandlerMethod.java:118)",
            "org.springframework.web.servlet.DispatcherServlet.doDispatch(DispatcherServlet.java:1089)",
            "org.springframework.web.servlet.FrameworkServlet.processRequest(FrameworkServlet.java:1014)",
            "jakarta.servlet.http.HttpServlet.service(HttpServlet.java:590)",
            "org.apache.catalina.core.ApplicationFilterChain.doFilter(ApplicationFilterChain.java:140)",
            "org.springframework.web.filter.OncePerRequestFilter.doFilter(OncePerRequestFilter.java:116)",
            "org.apache.catalina.core.StandardWrapperValve.invoke(StandardWrapperValve.java:167)",
            "org.apache.coyote.http11.Http11Processor.service(Http11Processor.java:397)",
            "org.apache.tomcat.util.net.NioEndpoint$SocketProcessor.doRun(NioEndpoint.java:1744)",
            "java.base/java.lang.Thread.run(Thread.java:1583)",
        ];
        let cause = [
            "org.springframework.dao.DataAccessResourceFailureException: Unable to acquire JDBC Connection",
            "java.net.SocketTimeoutException: Read timed out",
            "java.lang.IllegalStateException: Payment declined for order",
            "org.springframework.web.client.HttpServerErrorException$ServiceUnavailable: 503 Service Unavailable",
        ][self.rng.below(4) as usize];
        self.pending
            .push_back(("stdout", cause.as_bytes().to_vec()));
        let depth = 8 + self.rng.below(FRAMES.len() as u64 - 7) as usize;
        for frame in &FRAMES[..depth] {
            let n = 40 + self.rng.below(400);
            let line = format!("\tat {}", frame.replace("{n}", &n.to_string()));
            self.pending.push_back(("stdout", line.into_bytes()));
        }
        if self.rng.below(2) == 0 {
            self.pending.push_back((
                "stdout",
                b"Caused by: java.sql.SQLTransientConnectionException: HikariPool-1 - Connection is not available, request timed out after 30000ms.".to_vec(),
            ));
            for frame in [
                "com.zaxxer.hikari.pool.HikariPool.createTimeoutException(HikariPool.java:696)",
                "com.zaxxer.hikari.pool.HikariPool.getConnection(HikariPool.java:181)",
                "com.zaxxer.hikari.HikariDataSource.getConnection(HikariDataSource.java:128)",
            ] {
                self.pending
                    .push_back(("stdout", format!("\tat {frame}").into_bytes()));
            }
            let more = 20 + self.rng.below(60);
            self.pending.push_back((
                "stdout",
                format!("\t... {more} common frames omitted").into_bytes(),
            ));
        }
    }

    fn zap(&mut self, ns: i64, out: &mut Vec<u8>) -> &'static str {
        let roll = self.rng.below(100);
        let level = match roll {
            0..=1 => "error",
            2..=6 => "warn",
            7..=16 => "debug",
            _ => "info",
        };
        let caller = self.pick(GO_CALLERS);
        let line = 20 + self.rng.below(300);
        write!(
            out,
            "{{\"level\":\"{level}\",\"ts\":{}.{:06},\"caller\":\"{caller}:{line}\",\"msg\":\"",
            ns / 1_000_000_000,
            ns % 1_000_000_000 / 1000
        )
        .unwrap();
        if roll < 2 {
            let service = self.pick(SERVICES);
            write!(
                out,
                "upstream request failed\",\"service\":\"{service}\",\"error\":\"rpc error: code = Unavailable desc = connection error: desc = \\\"transport: Error while dialing: dial tcp 10.96.{}.{}:9090: connect: connection refused\\\"\",\"attempt\":{}",
                self.rng.below(256), self.rng.below(256), 1 + self.rng.below(5)
            )
            .unwrap();
            write!(
                out,
                ",\"stacktrace\":\"main.(*Server).call\\n\\t/app/server/handler.go:{line}\\nmain.(*Server).ServeHTTP\\n\\t/app/server/handler.go:88\\nnet/http.serverHandler.ServeHTTP\\n\\t/usr/local/go/src/net/http/server.go:3210\"}}"
            )
            .unwrap();
            return "stderr";
        }
        let method = self.pick(METHODS);
        let path = self.path();
        let status = self.pick(STATUS);
        let id = self.uuid();
        write!(
            out,
            "request handled\",\"method\":\"{method}\",\"path\":\"{path}\",\"status\":{status},\"latency\":{:.6},\"bytes\":{},\"request_id\":\"{id}\"",
            self.rng.below(250_000) as f64 / 1e6,
            self.rng.below(40_000)
        )
        .unwrap();
        if self.rng.below(200) == 0 {
            out.extend_from_slice(b",\"body\":");
            self.payload(out);
        }
        out.extend_from_slice(b"}");
        "stderr"
    }

    fn nginx(&mut self, _ms: i64, out: &mut Vec<u8>) -> &'static str {
        let [a, b, c, d] = self.client();
        if self.rng.below(100) == 0 {
            let (request, upstream) = (self.path(), self.path());
            write!(
                out,
                "{} {} [error] 29#29: *{} upstream timed out (110: Connection timed out) while reading response header from upstream, client: {a}.{b}.{c}.{d}, server: shop.example.com, request: \"GET {} HTTP/1.1\", upstream: \"http://10.{}.{}.{}:8080{}\", host: \"shop.example.com\"",
                self.clock.date.replace('-', "/"), self.clock.time, self.rng.below(1_000_000),
                request, self.ip[0], self.ip[1], self.rng.below(254) + 1, upstream
            )
            .unwrap();
            return "stderr";
        }
        let (method, path, status, agent) = (
            self.pick(METHODS),
            self.path(),
            self.pick(STATUS),
            self.pick(AGENTS),
        );
        let bytes = if status == 304 {
            0
        } else {
            self.rng.below(60_000)
        };
        write!(
            out,
            "{a}.{b}.{c}.{d} - - [{}:{} +0000] \"{method} {path} HTTP/1.1\" {status} {bytes} \"https://shop.example.com/\" \"{agent}\" {:.3}",
            self.clock.access_date,
            self.clock.time,
            self.rng.below(900) as f64 / 1000.0
        )
        .unwrap();
        "stdout"
    }

    fn istio(&mut self, ms: i64, out: &mut Vec<u8>) -> &'static str {
        let (method, path, status, agent) = (
            self.pick(METHODS),
            self.path(),
            self.pick(STATUS),
            self.pick(AGENTS),
        );
        let service = self.pick(SERVICES);
        let flags = if status >= 500 { "UF" } else { "-" };
        let id = self.uuid();
        let [_, b, c, d] = self.client();
        let (ip0, ip1) = (self.ip[0], self.ip[1]);
        write!(
            out,
            "[{}T{}.{ms:03}Z] \"{method} {path} HTTP/1.1\" {status} {flags} via_upstream - \"-\" {} {} {} {} \"10.{b}.{c}.{d}\" \"{agent}\" \"{id}\" \"{service}.shop.svc.cluster.local:8080\" \"10.{ip0}.{ip1}.{}:8080\" outbound|8080||{service}.shop.svc.cluster.local 10.{ip0}.{ip1}.9:{} 10.96.{}.{}:8080 10.{b}.{c}.{d}:{} - default",
            self.clock.date, self.clock.time,
            self.rng.below(2000), self.rng.below(50_000), self.rng.below(300), self.rng.below(300),
            1 + self.rng.below(254), 30_000 + self.rng.below(30_000),
            self.rng.below(256), self.rng.below(256), 30_000 + self.rng.below(30_000)
        )
        .unwrap();
        "stdout"
    }

    fn python(&mut self, ms: i64, out: &mut Vec<u8>) -> &'static str {
        let roll = self.rng.below(200);
        let (level, logger) = match roll {
            0..=2 => ("ERROR", "app.tasks"),
            3..=12 => ("WARNING", "urllib3.connectionpool"),
            13..=40 => ("DEBUG", "app.db"),
            _ => ("INFO", "celery.app.trace"),
        };
        write!(
            out,
            "{} {},{ms:03} {level} [{logger}] ",
            self.clock.date, self.clock.time
        )
        .unwrap();
        let id = self.uuid();
        match roll {
            0..=2 => {
                write!(out, "Task app.tasks.sync_inventory[{id}] raised unexpected: ConnectionError('Max retries exceeded')").unwrap();
                self.pending
                    .push_back(("stderr", b"Traceback (most recent call last):".to_vec()));
                for (file, line, func, code) in [
                    (
                        "/usr/local/lib/python3.12/site-packages/celery/app/trace.py",
                        453,
                        "trace_task",
                        "R = retval = fun(*args, **kwargs)",
                    ),
                    (
                        "/app/app/tasks.py",
                        88,
                        "sync_inventory",
                        "resp = session.get(url, timeout=5)",
                    ),
                    (
                        "/usr/local/lib/python3.12/site-packages/requests/sessions.py",
                        602,
                        "get",
                        "return self.request(\"GET\", url, **kwargs)",
                    ),
                    (
                        "/usr/local/lib/python3.12/site-packages/requests/adapters.py",
                        700,
                        "send",
                        "raise ConnectionError(e, request=request)",
                    ),
                ] {
                    self.pending.push_back((
                        "stderr",
                        format!("  File \"{file}\", line {line}, in {func}").into_bytes(),
                    ));
                    self.pending
                        .push_back(("stderr", format!("    {code}").into_bytes()));
                }
                let service = self.pick(SERVICES);
                self.pending.push_back((
                    "stderr",
                    format!("requests.exceptions.ConnectionError: HTTPConnectionPool(host='{service}', port=8080): Max retries exceeded with url: /internal/stock").into_bytes(),
                ));
            }
            3..=12 => {
                let service = self.pick(SERVICES);
                write!(out, "Retrying (Retry(total=2, connect=None, read=None, redirect=None, status=None)) after connection broken by 'ReadTimeoutError(\"HTTPConnectionPool(host='{service}', port=8080): Read timed out. (read timeout=5)\")': /internal/stock").unwrap();
            }
            13..=40 => {
                let sql = self.pick(SQL);
                write!(
                    out,
                    "query took {:.1}ms: {sql}",
                    self.rng.below(5000) as f64 / 10.0
                )
                .unwrap();
            }
            _ => {
                write!(
                    out,
                    "Task app.tasks.send_email[{id}] succeeded in {:.6}s: None",
                    self.rng.below(3_000_000) as f64 / 1e6
                )
                .unwrap();
            }
        }
        "stderr"
    }

    fn pino(&mut self, ns: i64, out: &mut Vec<u8>) -> &'static str {
        let roll = self.rng.below(100);
        let level = match roll {
            0 => 50,
            1..=4 => 40,
            _ => 30,
        };
        let (method, path, status) = (self.pick(METHODS), self.path(), self.pick(STATUS));
        let [a, b, c, d] = self.client();
        let req = self.rng.below(1 << 20);
        write!(
            out,
            "{{\"level\":{level},\"time\":{},\"pid\":{},\"hostname\":\"{}\",\"reqId\":\"req-{req:x}\",\"req\":{{\"method\":\"{method}\",\"url\":\"{path}\",\"remoteAddress\":\"::ffff:{a}.{b}.{c}.{d}\",\"remotePort\":{}}},",
            ns / 1_000_000,
            self.pid,
            self.hostname,
            30_000 + self.rng.below(30_000)
        )
        .unwrap();
        if level == 50 {
            write!(out, "\"err\":{{\"type\":\"Error\",\"message\":\"connect ECONNREFUSED 10.96.0.{}:6379\",\"stack\":\"Error: connect ECONNREFUSED\\n    at TCPConnectWrap.afterConnect [as oncomplete] (node:net:1611:16)\"}},\"msg\":\"request errored\"}}", self.rng.below(256)).unwrap();
        } else {
            write!(
                out,
                "\"res\":{{\"statusCode\":{status}}},\"responseTime\":{:.3},\"msg\":\"request completed\"",
                self.rng.below(500_000) as f64 / 1000.0
            )
            .unwrap();
            if self.rng.below(150) == 0 {
                out.extend_from_slice(b",\"body\":");
                self.payload(out);
            }
            out.extend_from_slice(b"}");
        }
        "stdout"
    }

    fn logfmt(&mut self, ms: i64, out: &mut Vec<u8>) -> &'static str {
        let roll = self.rng.below(100);
        let level = match roll {
            0..=2 => "error",
            3..=9 => "warn",
            10..=29 => "debug",
            _ => "info",
        };
        let component = self.pick(["cache", "scheduler", "http", "queue", "grpc"].as_slice());
        write!(
            out,
            "time={}T{}.{ms:03}Z level={level} component={component} msg=\"",
            self.clock.date, self.clock.time
        )
        .unwrap();
        let n = 2 + self.rng.below(3);
        self.words(n, out);
        write!(
            out,
            "\" duration={}.{:03}ms keys={} tenant=t-{:03} trace_id={:016x}",
            self.rng.below(500),
            self.rng.below(1000),
            self.rng.below(100_000),
            self.rng.below(120),
            self.rng.next_u64()
        )
        .unwrap();
        if roll < 3 {
            let service = self.pick(SERVICES);
            write!(
                out,
                " err=\"dial tcp: lookup {service}.shop.svc.cluster.local: i/o timeout\""
            )
            .unwrap();
        }
        "stdout"
    }

    fn redis(&mut self, ms: i64, out: &mut Vec<u8>) -> &'static str {
        write!(
            out,
            "1:M {} {}.{ms:03} ",
            self.clock.redis_date, self.clock.time
        )
        .unwrap();
        match self.rng.below(10) {
            0 => write!(
                out,
                "# Connection with replica 10.{}.{}.{}:6379 lost.",
                self.ip[0],
                self.ip[1],
                self.rng.below(254) + 1
            ),
            1..=3 => write!(
                out,
                "* Background saving started by pid {}",
                1000 + self.rng.below(60_000)
            ),
            4..=6 => write!(out, "* DB saved on disk"),
            _ => write!(
                out,
                "* {} changes in {} seconds. Saving...",
                1 + self.rng.below(10_000),
                [60, 300, 900][self.rng.below(3) as usize]
            ),
        }
        .unwrap();
        "stdout"
    }

    fn controller(&mut self, us: i64, out: &mut Vec<u8>) -> &'static str {
        let roll = self.rng.below(100);
        let severity = match roll {
            0..=1 => 'E',
            2..=6 => 'W',
            _ => 'I',
        };
        let file = self.pick(
            [
                "controller.go",
                "reconciler.go",
                "reflector.go",
                "leaderelection.go",
            ]
            .as_slice(),
        );
        let kind = self.pick(KINDS);
        let name = format!("{}-{}", self.pick(SERVICES), suffix(&mut self.rng));
        write!(
            out,
            "{severity}{} {}.{:06}       1 {file}:{}] ",
            self.clock.klog_day,
            self.clock.time,
            us % 1_000_000,
            50 + self.rng.below(400)
        )
        .unwrap();
        match roll {
            0..=1 => write!(
                out,
                "\"Reconciler error\" err=\"Operation cannot be fulfilled on {kind}s.apps \\\"{name}\\\": the object has been modified; please apply your changes to the latest version and try again\" controller=\"{kind}\" namespace=\"shop\" name=\"{name}\""
            ),
            2..=6 => write!(
                out,
                "\"Watch close\" reflector=\"k8s.io/client-go/informers/factory.go:160\" type=\"*v1.{kind}\" err=\"very short watch: unexpected EOF\""
            ),
            _ => {
                let id = self.uuid();
                write!(
                    out,
                    "\"Reconciling\" controller=\"{kind}\" namespace=\"shop\" name=\"{name}\" reconcileID=\"{id}\" took=\"{}.{:03}ms\"",
                    self.rng.below(50),
                    self.rng.below(1000)
                )
            }
        }
        .unwrap();
        "stderr"
    }

    fn postgres(&mut self, ms: i64, out: &mut Vec<u8>) -> &'static str {
        let pid = 100 + self.rng.below(60);
        write!(
            out,
            "{} {}.{ms:03} UTC [{pid}] ",
            self.clock.date, self.clock.time
        )
        .unwrap();
        match self.rng.below(20) {
            0 => write!(out, "ERROR:  duplicate key value violates unique constraint \"orders_pkey\"").unwrap(),
            1 => write!(
                out,
                "LOG:  checkpoint complete: wrote {} buffers ({:.1}%); 0 WAL file(s) added, 0 removed, 1 recycled; write={:.3} s, sync={:.3} s, total={:.3} s",
                self.rng.below(5000),
                self.rng.below(1000) as f64 / 10.0,
                self.rng.below(30_000) as f64 / 1000.0,
                self.rng.below(100) as f64 / 1000.0,
                self.rng.below(30_000) as f64 / 1000.0
            )
            .unwrap(),
            2..=4 => write!(
                out,
                "LOG:  connection authorized: user=app database=shop application_name={}",
                self.pick(SERVICES)
            )
            .unwrap(),
            _ => {
                let sql = self.pick(SQL);
                write!(
                    out,
                    "LOG:  duration: {}.{:03} ms  statement: {sql}",
                    self.rng.below(3000),
                    self.rng.below(1000)
                )
                .unwrap();
            }
        }
        "stderr"
    }
}

/// A pod-name-like suffix: five letters and digits.
fn suffix(rng: &mut Rng) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(20_424), (2025, 12, 2));
        assert_eq!(civil(20_789), (2026, 12, 2));
        assert_eq!(civil(19_782), (2024, 2, 29));
    }

    #[test]
    fn every_profile_writes_lines_of_its_shape() {
        let ns = 1_764_660_180_123_456_789; // 2025-12-02T07:23:00.123456789Z
        let mut line = Vec::new();
        for (i, profile) in PROFILES.into_iter().enumerate() {
            let mut app = App::new(profile, i as u64);
            let (mut total, mut long, mut multi) = (0usize, 0usize, 0usize);
            for n in 0..20_000 {
                app.line(ns + n * 1_000_000, &mut line);
                assert!(!line.is_empty(), "{profile:?}");
                assert!(!line.contains(&b'\n'), "{profile:?}: one record a line");
                assert!(line.len() <= 48 * 1024, "{profile:?}");
                total += line.len();
                long += usize::from(line.len() > 16 * 1024);
                multi += usize::from(line.starts_with(b"\tat ") || line.starts_with(b"  File"));
            }
            let mean = total / 20_000;
            assert!((60..2000).contains(&mean), "{profile:?}: mean {mean}");
            if matches!(profile, Profile::Spring | Profile::Python) {
                assert!(multi > 0, "{profile:?} has multi-line events");
            }
            if matches!(profile, Profile::Spring | Profile::Zap | Profile::Pino) {
                assert!(long > 0, "{profile:?} has lines the kubelet splits");
            }
        }
        let mut app = App::new(Profile::Nginx, 1);
        app.line(ns, &mut line);
        let text = String::from_utf8(line.clone()).unwrap();
        assert!(text.contains("[02/Dec/2025:07:23:00 +0000]"), "{text}");
        let mut app = App::new(Profile::Controller, 1);
        app.line(ns, &mut line);
        assert!(
            line[1..].starts_with(b"1202 07:23:00.123456"),
            "{}",
            String::from_utf8_lossy(&line)
        );
    }
}

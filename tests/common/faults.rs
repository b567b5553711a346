//! The project's fault-injection proxy (`hack/fault-proxy.py`) for tests: it stands in front of the stack's
//! AWS API server and fails a chosen share of each service's requests with that service's real error
//! responses (throttling, 5xx), or resets or holds the connection. Faults are injected before forwarding,
//! so a failed call never reaches the emulator and never applies.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running `hack/fault-proxy.py`, killed when dropped.
pub struct FaultProxy {
    child: Child,
    port: u16,
}

/// The Python the proxy runs with: `KAPPA_PYTHON` when the environment names one, else `python3`.
fn python() -> String {
    std::env::var("KAPPA_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

impl FaultProxy {
    /// Starts the proxy on a free loopback port in front of `upstream` (`http://127.0.0.1:PORT`), with no
    /// faults configured (every request forwarded) until [`FaultProxy::set`].
    pub fn start(upstream: &str) -> FaultProxy {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/fault-proxy.py");
        let python = python();
        let mut child = Command::new(&python)
            .args([
                script,
                "--upstream",
                upstream,
                "--listen",
                "127.0.0.1:0",
                "--seed",
                "1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `{python} {script}`: {e}; the fault proxy needs Python 3 (standard library \
                     only): install it with `apt-get install -y python3` (or set KAPPA_PYTHON to one)"
                )
            });
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut first)
            .expect("reading the fault proxy's first line");
        let port = first
            .trim()
            .strip_prefix("listening on http://127.0.0.1:")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                panic!("the fault proxy did not start (first line {first:?}, {status}); see its stderr above")
            });
        FaultProxy { child, port }
    }

    /// The proxy's URL, for an SDK's endpoint_url.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Fails every listed service's requests with probability `rate` (`"*"`: every other service), with
    /// a fault kind picked among `kinds` ("throttle", "5xx", "reset", "timeout") each time.
    pub async fn set(&self, rates: &[(&str, f64)], kinds: &[&str]) {
        let rate: serde_json::Map<String, serde_json::Value> =
            rates.iter().map(|(s, p)| (s.to_string(), (*p).into())).collect();
        self.configure(serde_json::json!({"rate": rate, "kinds": kinds}))
            .await;
    }

    /// Merges `config` into the proxy's configuration (keys `rate`, `kinds`, `timeoutSeconds`, `codes`,
    /// `seed`, `resetCounts`; see the script's doc); returns the proxy's view after the change.
    pub async fn configure(&self, config: serde_json::Value) -> serde_json::Value {
        self.control("POST", "/__faults", Some(&config)).await
    }

    /// The configuration and the counts: per service, `requests`, `forwarded`, `faults` by kind and
    /// `codes` by error code; `injected`, the last 50 faults.
    pub async fn counts(&self) -> serde_json::Value {
        self.control("GET", "/__faults", None).await
    }

    /// Every error shape the proxy answers with: service -> kind -> [{code, status, protocol}].
    pub async fn shapes(&self) -> serde_json::Value {
        self.control("GET", "/__faults/shapes", None).await
    }

    /// The stack's SDK configuration ([`super::aws_config`]) with the proxy as its endpoint.
    pub async fn aws_config_through(&self) -> aws_config::SdkConfig {
        super::stack_var("AWS_ENDPOINT_URL");
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .load()
            .await
    }

    async fn control(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> serde_json::Value {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap_or_else(|e| panic!("fault proxy control API on port {}: {e}", self.port));
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        let (head, json) = answer
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("fault proxy: no HTTP answer to {method} {path}: {answer:?}"));
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "fault proxy refused {method} {path} {body}: {head}\n{json}"
        );
        serde_json::from_str(json).unwrap_or_else(|e| panic!("fault proxy answer {json:?}: {e}"))
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! What the HTTPS tests share: the test CA and certificates that `scripts/brokers.sh` makes,
//! and a TLS client that is not Eddy's: Python's `http.client` over its `ssl` module (OpenSSL).

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use eddy_connectors::webhook::WebhookTls;

/// Where `scripts/brokers.sh` keeps its TLS material: a CA (`ca.pem`), a server certificate for
/// IP 127.0.0.1 only (`server.pem`, `server-key.pem`), a client certificate the CA signed
/// (`client.pem`, `client-key.pem`), and a rogue CA with a client certificate it signed.
pub fn dir() -> PathBuf {
    let brokers = std::env::var("EDDY_BROKERS_DIR").unwrap_or_else(|_| "/tmp/eddy-brokers".into());
    let dir = PathBuf::from(brokers).join("tls");
    assert!(
        dir.join("complete").is_file(),
        "no test certificates in {}: make them with `bash scripts/brokers.sh up`",
        dir.display()
    );
    dir
}

/// The file `name` of [`dir`].
pub fn file(name: &str) -> PathBuf {
    dir().join(name)
}

/// HTTPS for a webhook with the test server certificate (for 127.0.0.1).
pub fn server() -> WebhookTls {
    WebhookTls::new(file("server.pem"), file("server-key.pem"))
}

/// How the Python client connects.
#[derive(Clone, Debug, Default)]
pub struct Client {
    /// The CA to trust for `https://` (none: the system's).
    pub ca: Option<PathBuf>,
    /// A client certificate and its key.
    pub cert: Option<(PathBuf, PathBuf)>,
}

impl Client {
    /// Trusts the test CA.
    pub fn trusting_the_test_ca() -> Self {
        Client {
            ca: Some(file("ca.pem")),
            cert: None,
        }
    }

    /// The same, showing the client certificate `name` (`client` or `rogue-client`).
    pub fn with_cert(mut self, name: &str) -> Self {
        self.cert = Some((
            file(&format!("{name}.pem")),
            file(&format!("{name}-key.pem")),
        ));
        self
    }

    /// POSTs `body` with `headers` to `url` (`http://` or `https://`) on a new connection: the
    /// status and the answer's body, or the client's error (a TLS handshake that failed, a
    /// connection closed without an answer).
    pub fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<(u16, String), String> {
        let request = serde_json::json!({
            "url": url,
            "ca": self.ca,
            "cert": self.cert.as_ref().map(|(c, _)| c),
            "key": self.cert.as_ref().map(|(_, k)| k),
            "headers": headers.iter().cloned().collect::<std::collections::HashMap<_, _>>(),
            "body": hex::encode(body),
        });
        let mut child = Command::new("python3")
            .args(["-c", PYTHON_POST])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(request.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        match stdout.split_once('\n') {
            Some((status, body)) if out.status.success() => {
                Ok((status.parse().unwrap(), body.to_string()))
            }
            _ => Err(format!(
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
    }
}

/// The client: a JSON request on stdin; the status, a line break and the body on stdout; an
/// error (its type and message) on stderr, with exit status 1.
const PYTHON_POST: &str = r#"
import http.client, json, ssl, sys, urllib.parse
r = json.load(sys.stdin)
u = urllib.parse.urlsplit(r["url"])
try:
    if u.scheme == "https":
        ctx = ssl.create_default_context(cafile=r["ca"])
        if r["cert"]:
            ctx.load_cert_chain(r["cert"], r["key"])
        c = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=20)
    else:
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
    c.request("POST", u.path, body=bytes.fromhex(r["body"]), headers=r["headers"])
    a = c.getresponse()
    body = a.read().decode()
except Exception as e:
    sys.stderr.write(f"{type(e).__name__}: {e}")
    sys.exit(1)
sys.stdout.write(f"{a.status}\n{body}")
"#;

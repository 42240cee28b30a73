//! Endpoint URIs, as `eddy copy --from URI --to URI` takes them: a scheme naming the system,
//! an address, a path naming the topic, queue, subject or file, and options as query parameters.
//!
//! | URI | source | sink |
//! |---|---|---|
//! | `kafka://HOST:PORT/TOPIC` | a Kafka topic | a Kafka topic |
//! | `amqp://HOST:PORT/QUEUE` | a RabbitMQ queue (default vhost) | a RabbitMQ exchange/queue |
//! | `nats://HOST:PORT/SUBJECT` (`?stream=NAME`: JetStream) | a subject or stream | a subject or stream |
//! | `mqtt://HOST:PORT/TOPIC` | a topic filter | a topic |
//! | `http://ADDR:PORT/PATH` | a webhook listening there | the URL to POST to |
//! | `parquet:///DIR` | — | Parquet files in `DIR` |
//! | `jsonl:///PATH` (`-`: stdin/stdout) | JSON lines | JSON lines |
//! | `csv:///PATH` | CSV with a header row | CSV with a header row |
//!
//! Each connector documents its options (docs/connectors.md); an option a connector does not
//! know is an error that lists the ones it does, so a typo never passes silently.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use eddy_engine::ConnectorError;

/// A parsed endpoint URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The scheme, lower case: `kafka`, `amqp`, `nats`, `mqtt`, `http`, `parquet`, `jsonl`, `csv`.
    pub scheme: String,
    /// The host (empty for files).
    pub host: String,
    /// The port, when given.
    pub port: Option<u16>,
    /// The path without its leading `/` for brokers (the topic, queue or subject), the whole
    /// path for files and HTTP; `-` for stdin/stdout.
    pub path: String,
    /// Query parameters, in order; a name given twice keeps its last value.
    pub params: BTreeMap<String, String>,
    /// The URI as written, with the values of options that look like secrets hidden: what
    /// messages show.
    text: String,
}

impl FromStr for Endpoint {
    type Err = ConnectorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "-" {
            return Endpoint::from_str("jsonl:///-");
        }
        let url = url::Url::parse(text).map_err(|e| {
            ConnectorError::user(format!(
                "'{}' is not a URI ({e}): write it as SCHEME://HOST:PORT/NAME (kafka, amqp, \
                 nats, mqtt, http) or SCHEME:///PATH (parquet, jsonl, csv)",
                redact_userinfo(text)
            ))
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConnectorError::user(format!(
                "{}: a user or password in a URI shows in process lists, shell history and logs; \
                 give the user as an option (user= or username=) and the password with \
                 password_env=VAR or password_file=PATH (see docs/connectors.md, Security)",
                redact_userinfo(text)
            )));
        }
        let scheme = url.scheme().to_ascii_lowercase();
        let decoded = percent_decode(url.path());
        let path = match scheme.as_str() {
            "parquet" | "jsonl" | "csv" => match (url.host_str(), decoded.as_str()) {
                // `jsonl://-` and `jsonl:-` mean stdin/stdout as well as `jsonl:///-`.
                (Some("-"), _) | (None, "-") | (_, "/-") => "-".to_string(),
                // A relative path written `csv://out/rows.csv`.
                (Some(host), path) if !host.is_empty() => format!("{host}{path}"),
                (_, path) => path.to_string(),
            },
            "http" | "https" => decoded,
            _ => decoded.trim_start_matches('/').to_string(),
        };
        let host = match scheme.as_str() {
            "parquet" | "jsonl" | "csv" => String::new(),
            _ => url.host_str().unwrap_or_default().to_string(),
        };
        Ok(Endpoint {
            scheme,
            host,
            port: url.port(),
            path,
            params: url
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            text: redact_query(text),
        })
    }
}

fn percent_decode(path: &str) -> String {
    percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned()
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Endpoint {
    /// `HOST:PORT`, with `default_port` when the URI gives none (`127.0.0.1` when it gives no
    /// host).
    pub fn address(&self, default_port: u16) -> String {
        let host = if self.host.is_empty() {
            "127.0.0.1"
        } else {
            &self.host
        };
        format!("{host}:{}", self.port.unwrap_or(default_port))
    }

    /// The name the path gives (topic, queue, subject), or an error saying the URI needs one.
    pub fn name(&self, what: &str) -> Result<&str, ConnectorError> {
        if self.path.is_empty() {
            Err(ConnectorError::user(format!(
                "{self}: the URI names no {what}: write {}://HOST:PORT/{}",
                self.scheme,
                what.to_ascii_uppercase()
            )))
        } else {
            Ok(&self.path)
        }
    }

    /// The option `name`, if given.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The option `name` parsed as `T`, or an error naming the option and its value.
    pub fn parse_param<T: FromStr>(&self, name: &str) -> Result<Option<T>, ConnectorError>
    where
        T::Err: fmt::Display,
    {
        self.param(name)
            .map(|v| {
                v.parse::<T>().map_err(|e| {
                    ConnectorError::user(format!("{self}: option {name}={v} is not valid: {e}"))
                })
            })
            .transpose()
    }

    /// The option `name` as a duration (`500ms`, `5s`, `2m`).
    pub fn duration_param(&self, name: &str) -> Result<Option<Duration>, ConnectorError> {
        self.param(name)
            .map(|v| {
                parse_duration(v)
                    .map_err(|e| ConnectorError::user(format!("{self}: option {name}={v}: {e}")))
            })
            .transpose()
    }

    /// The option `name` as a byte size (`65536`, `512KiB`, `4MiB`).
    pub fn size_param(&self, name: &str) -> Result<Option<usize>, ConnectorError> {
        self.param(name)
            .map(|v| {
                parse_size(v)
                    .map_err(|e| ConnectorError::user(format!("{self}: option {name}={v}: {e}")))
            })
            .transpose()
    }

    /// The secret `name` (a password, a token, a signing secret), which a URI never holds:
    /// option `{name}_env=VAR` names an environment variable holding it, `{name}_file=PATH` a
    /// file (its contents, less one trailing line break). So it never appears in a command
    /// line, and errors name the variable or file, never the value.
    pub fn secret(&self, name: &str) -> Result<Option<String>, ConnectorError> {
        let (env, file) = (format!("{name}_env"), format!("{name}_file"));
        let secret = match (self.param(&env), self.param(&file)) {
            (Some(_), Some(_)) => {
                return Err(ConnectorError::user(format!(
                    "{self}: options {env} and {file} both give the {name}: keep one"
                )))
            }
            (None, None) => return Ok(None),
            (Some(var), None) => std::env::var(var).map_err(|_| {
                ConnectorError::user(format!(
                    "{self}: option {env}={var} names the environment variable {var}, which is \
                     not set: export it first"
                ))
            })?,
            (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
                ConnectorError::user(format!(
                    "{self}: option {file}={path}: the file cannot be read ({e}); give a \
                     readable file holding the {name}"
                ))
            })?,
        };
        let secret = secret
            .strip_suffix('\n')
            .map(|s| s.strip_suffix('\r').unwrap_or(s))
            .unwrap_or(&secret);
        if secret.is_empty() {
            return Err(ConnectorError::user(format!(
                "{self}: the {name} given by {} is empty",
                if self.param(&env).is_some() {
                    env
                } else {
                    file
                }
            )));
        }
        Ok(Some(secret.to_string()))
    }

    /// A client certificate and its key for mutual TLS (options `cert_file=` and `key_file=`,
    /// PEM files), when given; one without the other is an error.
    pub fn client_cert(&self) -> Result<Option<(PathBuf, PathBuf)>, ConnectorError> {
        let path = |name: &str| self.param(name).map(PathBuf::from);
        match (path("cert_file"), path("key_file")) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            _ => Err(ConnectorError::user(format!(
                "{self}: a client certificate needs both cert_file= and key_file="
            ))),
        }
    }

    /// Fails when an option is not one of `known`, listing the known ones.
    pub fn check_params(&self, known: &[&str]) -> Result<(), ConnectorError> {
        match self.params.keys().find(|k| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some(unknown) => Err(ConnectorError::user(format!(
                "{self}: unknown option '{unknown}' for {}; the options are: {}",
                self.scheme,
                if known.is_empty() {
                    "(none)".to_string()
                } else {
                    known.join(", ")
                }
            ))),
        }
    }
}

/// `text` with the password of a `scheme://user:password@host` part replaced by `***`, for
/// messages about a URI that may hold one.
fn redact_userinfo(text: &str) -> String {
    let Some(start) = text.find("://").map(|i| i + 3) else {
        return text.to_string();
    };
    let authority_end = text[start..]
        .find(['/', '?', '#'])
        .map_or(text.len(), |i| start + i);
    let Some(at) = text[start..authority_end].rfind('@').map(|i| start + i) else {
        return text.to_string();
    };
    match text[start..at].find(':').map(|i| start + i) {
        Some(colon) => format!("{}***{}", &text[..=colon], &text[at..]),
        None => text.to_string(),
    }
}

/// Whether an option named `key` would hold a secret itself (`password=`, `sasl.password=`,
/// `token=`), as opposed to naming where one is (`password_env=`, `token_file=`).
fn holds_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    let named = [
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "credential",
    ]
    .iter()
    .any(|word| key.contains(word));
    named && !key.ends_with("_env") && !key.ends_with("_file")
}

/// `text` with the values of its query options that look like secrets replaced by `***`.
fn redact_query(text: &str) -> String {
    let Some((head, query)) = text.split_once('?') else {
        return text.to_string();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if holds_secret(&percent_decode(key)) => format!("{key}=***"),
            _ => pair.to_string(),
        })
        .collect();
    let mut shown = format!("{head}?{}", pairs.join("&"));
    if let Some(f) = fragment {
        shown.push('#');
        shown.push_str(f);
    }
    shown
}

/// Parses a duration: a number with a unit (`250ms`, `5s`, `2m`, `1h`), or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|_| {
            format!("'{text}' is not a duration: give a number of seconds from 0 to 10^19")
        });
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("'{text}' is not a duration ({e}): write e.g. 500ms, 5s, 2m"))
}

/// Parses a byte size: plain bytes, or with a unit `KiB`/`k` or `MiB`/`M`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        other => {
            return Err(format!(
                "unknown unit '{other}': write bytes, or use KiB or MiB"
            ))
        }
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("'{text}' is not a size: write e.g. 65536, 512KiB or 4MiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_uris_are_refused_or_hidden_and_never_shown() {
        let err = "amqp://user:s3cretPW@127.0.0.1:5672/q?bogus=1"
            .parse::<Endpoint>()
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cretPW"), "{err}");
        assert!(
            err.contains("amqp://user:***@127.0.0.1:5672/q") && err.contains("password_file"),
            "{err}"
        );
        let err = "amqp://user:s3cretPW@[::1"
            .parse::<Endpoint>()
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("s3cretPW") && err.contains("user:***@"),
            "{err}"
        );
        let e: Endpoint = "kafka://h:9092/t?sasl.password=s3cretPW&token=t0k3n&group=g&token_env=V"
            .parse()
            .unwrap();
        let shown = e.to_string();
        assert!(
            !shown.contains("s3cretPW") && !shown.contains("t0k3n"),
            "{shown}"
        );
        assert!(
            shown.contains("sasl.password=***") && shown.contains("group=g&token_env=V"),
            "{shown}"
        );
        assert_eq!(
            e.param("token"),
            Some("t0k3n"),
            "the options keep their values"
        );
    }

    #[test]
    fn secrets_come_from_a_variable_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "from-a-file\n").unwrap();
        let e: Endpoint = format!("amqp://h/q?password_file={}", file.display())
            .parse()
            .unwrap();
        assert_eq!(
            e.secret("password").unwrap().as_deref(),
            Some("from-a-file")
        );
        let none: Endpoint = "amqp://h/q".parse().unwrap();
        assert_eq!(none.secret("password").unwrap(), None);
        let both: Endpoint = format!("amqp://h/q?password_env=X&password_file={}", file.display())
            .parse()
            .unwrap();
        assert!(both
            .secret("password")
            .unwrap_err()
            .to_string()
            .contains("keep one"));
        let missing: Endpoint = "amqp://h/q?password_file=/no/such/file".parse().unwrap();
        let err = missing.secret("password").unwrap_err().to_string();
        assert!(
            err.contains("/no/such/file") && err.contains("cannot be read"),
            "{err}"
        );
        std::fs::write(&file, "\n").unwrap();
        let err = e.secret("password").unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
    }

    #[test]
    fn broker_uris_give_address_name_and_options() {
        let e: Endpoint = "kafka://127.0.0.1:9092/clicks?group=eddy&partitions=4"
            .parse()
            .unwrap();
        assert_eq!(e.scheme, "kafka");
        assert_eq!(e.address(9092), "127.0.0.1:9092");
        assert_eq!(e.name("topic").unwrap(), "clicks");
        assert_eq!(e.param("group"), Some("eddy"));
        assert_eq!(e.parse_param::<u32>("partitions").unwrap(), Some(4));
        assert!(e.parse_param::<u32>("group").is_err());
        assert!(e.check_params(&["group", "partitions"]).is_ok());
        let err = e.check_params(&["group"]).unwrap_err().to_string();
        assert!(
            err.contains("unknown option 'partitions'") && err.contains("group"),
            "{err}"
        );
        let n: Endpoint = "nats://localhost/orders.eu?stream=ORDERS".parse().unwrap();
        assert_eq!(n.address(4222), "localhost:4222");
        assert_eq!(n.name("subject").unwrap(), "orders.eu");
        let none: Endpoint = "amqp://127.0.0.1:5672/".parse().unwrap();
        let err = none.name("queue").unwrap_err().to_string();
        assert!(err.contains("amqp://HOST:PORT/QUEUE"), "{err}");
    }

    #[test]
    fn file_uris_give_paths_and_dash_is_stdio() {
        let p: Endpoint = "parquet:///tmp/out".parse().unwrap();
        assert_eq!(
            (p.scheme.as_str(), p.path.as_str()),
            ("parquet", "/tmp/out")
        );
        let rel: Endpoint = "csv://out/rows.csv".parse().unwrap();
        assert_eq!(rel.path, "out/rows.csv");
        for dash in ["-", "jsonl:///-", "jsonl://-"] {
            let e: Endpoint = dash.parse().unwrap();
            assert_eq!(
                (e.scheme.as_str(), e.path.as_str()),
                ("jsonl", "-"),
                "{dash}"
            );
        }
        let h: Endpoint = "http://127.0.0.1:8080/hooks/orders?secret_env=NOPE_NOT_SET"
            .parse()
            .unwrap();
        assert_eq!(h.path, "/hooks/orders");
        assert!(h
            .secret("secret")
            .unwrap_err()
            .to_string()
            .contains("not set"));
        assert!("no scheme here".parse::<Endpoint>().is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("1e300").is_err(), "too long, not a panic");
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999999999MiB").is_err());
    }
}

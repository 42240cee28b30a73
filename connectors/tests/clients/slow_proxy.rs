//! A TCP proxy on loopback that can hold back what a client sends to its broker, shared by the
//! connector tests through `#[path]`: with a delay set, a sink's publishes reach the broker
//! only that long after they were written, so a test can tell a sink that waits for its broker
//! (`SinkWriter::commit`) from one that only handed the bytes to its socket.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A proxy in front of one broker; its threads end with the test process.
pub struct SlowProxy {
    /// Where clients connect instead of the broker: `127.0.0.1:PORT`.
    pub address: String,
    delay_ms: Arc<AtomicU64>,
}

impl SlowProxy {
    /// Starts forwarding connections to `target` (`HOST:PORT`), at first without delay.
    pub fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = Arc::clone(&delay_ms);
        let target = target.to_string();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if let Ok(broker) = TcpStream::connect(&target) {
                    forward(client, broker, Arc::clone(&delay));
                }
            }
        });
        SlowProxy { address, delay_ms }
    }

    /// From now on, every byte a client sends reaches the broker `delay` later (the broker's
    /// answers are not delayed).
    pub fn delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }
}

fn forward(client: TcpStream, broker: TcpStream, delay_ms: Arc<AtomicU64>) {
    let _ = client.set_nodelay(true);
    let _ = broker.set_nodelay(true);
    // Client to broker: each chunk is held until its time has come.
    let (chunks, due) = mpsc::channel::<(Instant, Vec<u8>)>();
    let mut from_client = client.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from_client.read(&mut buffer) {
            let at = Instant::now() + Duration::from_millis(delay_ms.load(Ordering::Relaxed));
            if chunks.send((at, buffer[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    let mut to_broker = broker.try_clone().unwrap();
    std::thread::spawn(move || {
        for (at, chunk) in due {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            if to_broker.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to_broker.shutdown(Shutdown::Write);
    });
    // Broker to client, at once.
    let (mut from_broker, mut to_client) = (broker, client);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_broker, &mut to_client);
        let _ = to_client.shutdown(Shutdown::Both);
    });
}

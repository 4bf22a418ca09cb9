//! The sniff stage: read the first bytes of a connection until the sniff
//! plugin decides what it is.
//!
//! Bytes are read into a buffer bounded by the listener's byte cap. After
//! each read the plugin is asked; it may ask for more. When the cap is
//! reached, the inspect deadline passes or the client stops sending, the
//! plugin is asked one last time with `complete = true` and must decide. The
//! bytes read are returned with the verdict so the next stage can replay
//! them: nothing the client sent is lost.

use crate::metrics::{self, GaugeGuard};
use crate::plugin::{ConnFacts, PluginError, Sniffer, Verdict};
use crate::tls::client_hello::{self, Hello};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// Per-listener bounds on sniffing.
#[derive(Debug, Clone, Copy)]
pub struct SniffLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
}

/// Why the plugin was asked to decide on what it had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The plugin decided before it had to.
    Early,
    /// The byte cap was reached.
    ByteCap,
    /// The inspect deadline passed.
    Deadline,
    /// The client closed its sending side.
    ClientFinished,
}

/// The result of sniffing: the head and what the plugin made of it.
#[derive(Debug)]
pub struct Sniffed {
    /// Every byte read from the client, to be replayed to the next stage.
    pub head: Vec<u8>,
    pub decision: Result<Verdict, SniffFailure>,
    pub completion: Completion,
}

/// The plugin gave no usable verdict.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SniffFailure {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("asked for more bytes after being told no more would come")]
    NeedMoreWhenComplete,
}

impl SniffFailure {
    pub fn label(&self) -> &'static str {
        match self {
            SniffFailure::Plugin(e) => e.label(),
            SniffFailure::NeedMoreWhenComplete => "need-more-when-complete",
        }
    }
}

/// Bytes asked for per read while sniffing.
const READ_SIZE: usize = 2048;

/// Read from `client` until `sniffer` decides. `initial` holds bytes already
/// read from the client by an earlier stage (after a PROXY header); they
/// are the start of the head. Fails only when reading from the client fails.
pub async fn sniff<S>(
    client: &mut S,
    sniffer: &dyn Sniffer,
    conn: &ConnFacts,
    limits: SniffLimits,
    initial: Vec<u8>,
) -> io::Result<Sniffed>
where
    S: AsyncRead + Unpin,
{
    // Looked up once per process, not once per connection.
    static SNIFFING: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicI64>> = std::sync::OnceLock::new();
    let _sniffing =
        GaugeGuard::new(SNIFFING.get_or_init(|| metrics::gauge("sluice_connections_sniffing", Vec::new())).clone());
    let deadline = Instant::now() + limits.timeout;
    let mut head = initial;
    head.truncate(limits.max_bytes);
    // Bytes already in hand are classified before waiting for more.
    let mut classify_first = !head.is_empty();
    let mut with_hello: Option<ConnFacts> = None;
    loop {
        let completion = if std::mem::take(&mut classify_first) {
            (head.len() >= limits.max_bytes).then_some(Completion::ByteCap)
        } else {
            // Read straight into the head (no chunk buffer in the connection's future).
            let start = head.len();
            head.resize(start + (limits.max_bytes - start).min(READ_SIZE), 0);
            let read = tokio::time::timeout_at(deadline, client.read(&mut head[start..])).await;
            let got = match &read {
                Ok(Ok(n)) => *n,
                _ => 0,
            };
            head.truncate(start + got);
            match read {
                Err(_elapsed) => Some(Completion::Deadline),
                Ok(Ok(0)) => Some(Completion::ClientFinished),
                Ok(Ok(_)) => (head.len() >= limits.max_bytes).then_some(Completion::ByteCap),
                Ok(Err(e)) => return Err(e),
            }
        };
        let complete = completion.is_some();
        // Outside TLS, a complete ClientHello's server name and ALPN are handed
        // to the plugin, so it can pass TLS through by name.
        if conn.tls.is_none()
            && with_hello.is_none()
            && let Hello::Complete(hello) = client_hello::parse(&head)
        {
            with_hello = Some(ConnFacts { hello: Some(hello), ..conn.clone() });
        }
        let facts = with_hello.as_ref().unwrap_or(conn);
        let decision = match sniffer.classify(facts, &head, complete) {
            Ok(Verdict::NeedMore) if !complete => continue,
            Ok(Verdict::NeedMore) => Err(SniffFailure::NeedMoreWhenComplete),
            Ok(verdict) => Ok(verdict),
            Err(e) => Err(SniffFailure::Plugin(e)),
        };
        return Ok(Sniffed { head, decision, completion: completion.unwrap_or(Completion::Early) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::PluginName;
    use tokio::io::AsyncWriteExt;

    /// Decides "forward-default" once it has seen `want` bytes.
    struct CountingSniffer {
        name: PluginName,
        want: usize,
    }

    impl Sniffer for CountingSniffer {
        fn name(&self) -> &PluginName {
            &self.name
        }

        fn version(&self) -> &str {
            "test"
        }

        fn classify(&self, _: &ConnFacts, head: &[u8], complete: bool) -> Result<Verdict, PluginError> {
            Ok(if head.len() >= self.want || complete { Verdict::ForwardDefault } else { Verdict::NeedMore })
        }
    }

    fn sniffer(want: usize) -> CountingSniffer {
        CountingSniffer { name: PluginName::new("counting"), want }
    }

    const LIMITS: SniffLimits = SniffLimits { max_bytes: 16, timeout: Duration::from_secs(5) };

    #[tokio::test]
    async fn reads_until_the_plugin_decides_and_keeps_every_byte() {
        let (mut client, mut peer) = tokio::io::duplex(64);
        peer.write_all(b"abc").await.unwrap();
        let task = tokio::spawn(async move {
            sniff(&mut client, &sniffer(5), &ConnFacts::probe(), LIMITS, Vec::new()).await.unwrap()
        });
        tokio::task::yield_now().await;
        peer.write_all(b"defg").await.unwrap();
        let sniffed = task.await.unwrap();
        assert_eq!(sniffed.head, b"abcdefg");
        assert_eq!(sniffed.completion, Completion::Early);
        assert_eq!(sniffed.decision.unwrap(), Verdict::ForwardDefault);
    }

    #[tokio::test]
    async fn byte_cap_forces_a_decision() {
        let (mut client, mut peer) = tokio::io::duplex(64);
        peer.write_all(&[b'x'; 40]).await.unwrap();
        let sniffed = sniff(&mut client, &sniffer(100), &ConnFacts::probe(), LIMITS, Vec::new()).await.unwrap();
        assert_eq!(sniffed.head.len(), 16);
        assert_eq!(sniffed.completion, Completion::ByteCap);
    }

    #[tokio::test(start_paused = true)]
    async fn silence_until_the_deadline_is_decided_on_nothing() {
        let (mut client, _peer) = tokio::io::duplex(64);
        let sniffed = sniff(&mut client, &sniffer(100), &ConnFacts::probe(), LIMITS, Vec::new()).await.unwrap();
        assert!(sniffed.head.is_empty());
        assert_eq!(sniffed.completion, Completion::Deadline);
    }

    #[tokio::test]
    async fn a_client_that_closes_early_is_decided_on_what_it_sent() {
        let (mut client, mut peer) = tokio::io::duplex(64);
        peer.write_all(b"hi").await.unwrap();
        drop(peer);
        let sniffed = sniff(&mut client, &sniffer(100), &ConnFacts::probe(), LIMITS, Vec::new()).await.unwrap();
        assert_eq!(sniffed.head, b"hi");
        assert_eq!(sniffed.completion, Completion::ClientFinished);
    }
}

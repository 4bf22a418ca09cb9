//! Closed-loop connection rates: `concurrency` clients, each opening a new
//! connection, doing one exchange and closing, until the deadline or the
//! count runs out. Prints one line: `ok=… errors=… seconds=… rate=…`.

use anyhow::{Context, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

#[derive(clap::Args, Clone)]
pub struct Args {
    /// The proxy (or backend) to connect to.
    #[arg(long)]
    addr: SocketAddr,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// Connections in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Stop after this many connections even if time is left.
    #[arg(long, default_value_t = 10_000_000)]
    max: u64,
    /// Deadline for one connection's whole exchange.
    #[arg(long, default_value = "5s", value_parser = crate::parse_duration)]
    timeout: Duration,
}

#[derive(clap::Args)]
pub struct TlsArgs {
    #[command(flatten)]
    rate: Args,
    /// The server name sent in the ClientHello.
    #[arg(long, default_value = "bench.local")]
    sni: String,
    /// Close right after the handshake instead of sending an HTTP/1.0 request.
    #[arg(long)]
    handshake_only: bool,
    /// Resumption: `none` (every handshake is a full TLS 1.3 one), `tls13`
    /// (tickets from earlier connections) or `tls12` (TLS 1.2 only, session
    /// ID or ticket). Resumed handshakes are counted (`resumed=`); a client
    /// with no ticket at hand does a full one.
    #[arg(long, default_value = "none")]
    resume: String,
}

const REQUEST: &[u8] = b"GET / HTTP/1.0\r\nHost: bench.local\r\nUser-Agent: loadgen\r\n\r\n";
const FLASH: &[u8] = b"<policy-file-request/>\0";
const MAX_RESPONSE: usize = 64 << 10;

pub async fn conn_rate(args: Args) -> anyhow::Result<()> {
    let addr = crate::loopback(args.addr)?;
    drive("conn-rate", &args, move || async move {
        let mut stream = connect(addr).await?;
        stream.write_all(REQUEST).await?;
        check_http(&read_to_close(&mut stream).await?)
    })
    .await
}

pub async fn flash_rate(args: Args) -> anyhow::Result<()> {
    let addr = crate::loopback(args.addr)?;
    drive("flash-rate", &args, move || async move {
        let mut stream = connect(addr).await?;
        stream.write_all(FLASH).await?;
        // Flash reads the policy up to a NUL (or the close).
        let mut reply = Vec::with_capacity(512);
        loop {
            if stream.read_buf(&mut reply).await? == 0 || reply.contains(&0) || reply.len() > MAX_RESPONSE {
                break;
            }
        }
        if !reply.windows(20).any(|w| w == b"<cross-domain-policy") {
            bail!("not a policy: {:?}", String::from_utf8_lossy(&reply[..reply.len().min(80)]));
        }
        Ok(())
    })
    .await
}

pub async fn tls_rate(args: TlsArgs) -> anyhow::Result<()> {
    let addr = crate::loopback(args.rate.addr)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match args.resume.as_str() {
        "none" | "tls13" => &[&rustls::version::TLS13],
        "tls12" => &[&rustls::version::TLS12],
        other => bail!("--resume {other}: expected none, tls13 or tls12"),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.resumption = match args.resume.as_str() {
        // Every connection is a full handshake.
        "none" => rustls::client::Resumption::disabled(),
        _ => rustls::client::Resumption::in_memory_sessions(1024),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(args.sni.clone()).context("--sni")?;
    let handshake_only = args.handshake_only;
    let resumed = Arc::new(AtomicU64::new(0));
    let counter = resumed.clone();
    drive("tls-rate", &args.rate, move || {
        let (connector, name, counter) = (connector.clone(), name.clone(), counter.clone());
        async move {
            let stream = connect(addr).await?;
            let mut tls = connector.connect(name, stream).await.context("handshake")?;
            if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            if handshake_only {
                tls.shutdown().await?;
                return Ok(());
            }
            tls.write_all(REQUEST).await?;
            check_http(&read_to_close(&mut tls).await?)
        }
    })
    .await?;
    println!("tls-rate resumed={}", resumed.load(Ordering::Relaxed));
    Ok(())
}

async fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Read until the peer closes. A TLS peer that closes without close_notify
/// still counts once the response is complete.
async fn read_to_close<S: AsyncRead + Unpin>(stream: &mut S) -> anyhow::Result<Vec<u8>> {
    let mut response = Vec::with_capacity(1024);
    loop {
        match stream.read_buf(&mut response).await {
            Ok(0) => return Ok(response),
            Ok(_) if response.len() > MAX_RESPONSE => bail!("response over {MAX_RESPONSE} bytes"),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => return Ok(response),
            Err(e) => return Err(e.into()),
        }
    }
}

fn check_http(response: &[u8]) -> anyhow::Result<()> {
    let line_end = response.iter().position(|&b| b == b'\r').unwrap_or(response.len());
    let line = String::from_utf8_lossy(&response[..line_end]);
    if !(line.starts_with("HTTP/1.") && line.contains(" 200")) {
        bail!("unexpected response: {line:?}");
    }
    Ok(())
}

/// Run `op` in a closed loop on `concurrency` tasks; print the rate.
async fn drive<F, Fut>(label: &str, args: &Args, op: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let deadline = started + args.duration;
    let budget = Arc::new(AtomicU64::new(args.max));
    let mut tasks = JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (op, budget, timeout) = (op.clone(), budget.clone(), args.timeout);
        tasks.spawn(async move {
            let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
            while Instant::now() < deadline && take(&budget) {
                match tokio::time::timeout(timeout, op()).await {
                    Ok(Ok(())) => ok += 1,
                    Ok(Err(e)) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                    Err(_) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| "timed out".to_string());
                    }
                }
            }
            (ok, errors, first_error)
        });
    }
    let (mut ok, mut errors, mut first_error) = (0, 0, None);
    while let Some(result) = tasks.join_next().await {
        let (o, e, first) = result?;
        ok += o;
        errors += e;
        first_error = first_error.or(first);
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(error) = first_error {
        eprintln!("{label}: first error: {error}");
    }
    println!("{label} ok={ok} errors={errors} seconds={seconds:.2} rate={:.0}", ok as f64 / seconds);
    Ok(())
}

fn take(budget: &AtomicU64) -> bool {
    budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1)).is_ok()
}

/// Accepts any certificate (the benchmark's own self-signed one) but still
/// checks the handshake signature, so the client does the same work for
/// every proxy.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

//! One ACME order, start to finish, with `instant-acme`: account, order,
//! challenges, CSR, certificate.

use super::store::{self, Paths};
use super::{AcmeConfig, ChallengeKind, PendingChallenge};
use instant_acme::{
    Account, AccountBuilder, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, Key, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::CertifiedKey;
use std::sync::Arc;
use std::time::Duration;

/// Why an order failed; each variant says which step.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("ACME client setup: {0}")]
    Setup(String),
    #[error("account at {directory}: {error}")]
    Account { directory: String, error: String },
    #[error("state directory: {0}")]
    State(String),
    #[error("order: {0}")]
    Order(String),
    #[error("authorization for {name}: {error}")]
    Challenge { name: String, error: String },
    #[error("certificate: {0}")]
    Certificate(String),
}

/// A certificate as issued: the PEM chain and key, parsed.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

/// How long to poll the CA for a validation or a certificate.
const POLL: RetryPolicy = RetryPolicy::new().initial_delay(Duration::from_millis(250)).timeout(Duration::from_secs(90));

pub async fn issue(config: &AcmeConfig, paths: &Paths) -> Result<Issued, IssueError> {
    let account = account(config, paths).await?;
    let identifiers: Vec<Identifier> = config.names.iter().map(|name| Identifier::Dns(name.clone())).collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await.map_err(|e| IssueError::Order(full(&e)))?;

    // Answer every pending authorization; the answers stay up until the order is decided.
    let mut pending = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.map_err(|e| IssueError::Order(full(&e)))?;
        let name = authorization.identifier().to_string();
        let fail = |error: String| IssueError::Challenge { name: name.clone(), error };
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(fail(format!("the authorization is {other:?}"))),
        }
        let kind = match config.challenge {
            ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
            ChallengeKind::Http01 => ChallengeType::Http01,
        };
        let label = config.challenge.label();
        let mut challenge =
            authorization.challenge(kind).ok_or_else(|| fail(format!("the CA does not offer {label}")))?;
        let key_authorization = challenge.key_authorization();
        pending.push(match config.challenge {
            ChallengeKind::TlsAlpn01 => {
                let certificate = challenge_certificate(&name, key_authorization.digest().as_ref()).map_err(fail)?;
                PendingChallenge::tls_alpn(&name, certificate)
            }
            ChallengeKind::Http01 => PendingChallenge::http(&challenge.token, key_authorization.as_str()),
        });
        challenge.set_ready().await.map_err(|e| fail(full(&e)))?;
    }
    let status = order.poll_ready(&POLL).await.map_err(|e| IssueError::Order(full(&e)))?;
    drop(pending);
    if status != OrderStatus::Ready {
        let why = order.state().error.as_ref().map_or_else(|| format!("{status:?}"), |e| full(e));
        return Err(IssueError::Order(format!("the CA did not validate the names ({why})")));
    }

    let key = rcgen::KeyPair::generate().map_err(|e| IssueError::Certificate(full(&e)))?;
    let csr = rcgen::CertificateParams::new(config.names.clone())
        .and_then(|params| params.serialize_request(&key))
        .map_err(|e| IssueError::Certificate(format!("cannot make the CSR: {e}")))?;
    order.finalize_csr(csr.der()).await.map_err(|e| IssueError::Certificate(full(&e)))?;
    let chain_pem = order.poll_certificate(&POLL).await.map_err(|e| IssueError::Certificate(full(&e)))?;
    Ok(Issued { chain_pem, key_pem: key.serialize_pem() })
}

/// The account: registered on first use and kept in the state directory.
/// A stored key is registered again each time (`newAccount` with an existing
/// key returns that account), so a CA that forgot the account (a reset test
/// CA) gets it back with the same key.
async fn account(config: &AcmeConfig, paths: &Paths) -> Result<Account, IssueError> {
    // Listeners sharing a state directory share the account: one registers it, the others read it.
    static REGISTERING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _registering = REGISTERING.lock().await;
    let failed = |error: String| IssueError::Account { directory: config.directory.clone(), error };
    let builder = || -> Result<AccountBuilder, IssueError> {
        let builder = match &config.ca_file {
            Some(file) => Account::builder_with_root(file),
            None => Account::builder(),
        };
        builder.map_err(|e| IssueError::Setup(full(&e)))
    };
    if let Some(json) = store::read_account(paths).map_err(IssueError::State)? {
        let credentials: AccountCredentials = serde_json::from_slice(&json)
            .map_err(|e| IssueError::State(format!("{}: {e}", paths.account.display())))?;
        let pkcs8 = credentials.private_key().clone_key();
        let key = Key::from_pkcs8_der(pkcs8.clone_key()).map_err(|e| failed(full(&e)))?;
        let (account, _) = builder()?
            .create_from_key((key, PrivateKeyDer::Pkcs8(pkcs8)), config.directory.clone())
            .await
            .map_err(|e| failed(full(&e)))?;
        return Ok(account);
    }
    let contact: Vec<&str> = config.contact.iter().map(String::as_str).collect();
    let new = NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false };
    let (account, credentials) =
        builder()?.create(&new, config.directory.clone(), None).await.map_err(|e| failed(full(&e)))?;
    let json = serde_json::to_vec_pretty(&credentials).map_err(|e| IssueError::State(full(&e)))?;
    store::save_account(paths, &json).map_err(IssueError::State)?;
    tracing::info!(directory = %config.directory, file = %paths.account.display(), "ACME account registered");
    Ok(account)
}

/// An error with its causes ("client error (Connect): tcp connect error: Connection refused").
fn full(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// The TLS-ALPN-01 certificate (RFC 8737 §3): self-signed, for `name` only,
/// with the critical acmeIdentifier extension holding the SHA-256 digest of
/// the key authorization.
fn challenge_certificate(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| e.to_string())?;
    // Not `CertifiedKey::from_der`: its key check parses the certificate with
    // webpki, which refuses the critical acmeIdentifier extension.
    let signing_key =
        rustls::crypto::ring::default_provider().key_provider.load_private_key(key).map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing_key)))
}

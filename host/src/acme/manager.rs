//! One ACME listener's renewal loop: serve the stored certificate, order a
//! new one at the renewal point, back off after failures, report.

use super::AcmeConfig;
use super::issue::{self, IssueError};
use super::store::{self, Certificate, Paths};
use crate::metrics;
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// The longest an order may take, polling included, before it counts as failed.
const ORDER_TIMEOUT: Duration = Duration::from_secs(300);

/// What `/status` shows for one ACME listener.
#[derive(Debug, Clone)]
pub struct OrderStatus {
    names: Vec<String>,
    directory: String,
    challenge: &'static str,
    /// Validity of the certificate being served, if there is one.
    certificate: Option<(SystemTime, SystemTime)>,
    /// When the next order starts (renewal point or retry), or `None` while one runs.
    next_attempt: Option<SystemTime>,
    consecutive_failures: u32,
    last_error: Option<(SystemTime, String)>,
    last_success: Option<SystemTime>,
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl OrderStatus {
    pub fn json(&self, listener: &str) -> serde_json::Value {
        json!({
            "listener": listener,
            "names": self.names,
            "directory": self.directory,
            "challenge": self.challenge,
            "certificate": self.certificate.map(|(not_before, not_after)| json!({
                "not_before_unix": unix(not_before),
                "not_after_unix": unix(not_after),
            })),
            "next_attempt_unix": self.next_attempt.map(unix),
            "ordering": self.next_attempt.is_none(),
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error.as_ref().map(|(at, error)| json!({ "at_unix": unix(*at), "error": error })),
            "last_success_unix": self.last_success.map(unix),
        })
    }
}

pub struct Manager {
    listener: String,
    config: AcmeConfig,
    paths: Paths,
    status: OrderStatus,
    current: Option<Certificate>,
}

impl Manager {
    pub fn new(listener: String, config: AcmeConfig) -> Manager {
        let paths = Paths::new(&config.state_dir, &config.directory, &config.names[0]);
        let status = OrderStatus {
            names: config.names.clone(),
            directory: config.directory.clone(),
            challenge: config.challenge.label(),
            certificate: None,
            next_attempt: None,
            consecutive_failures: 0,
            last_error: None,
            last_success: None,
        };
        Manager { listener, config, paths, status, current: None }
    }

    /// Serve the stored certificate, then renew until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        match store::load_certificate(&self.paths) {
            Ok(Some(certificate)) => {
                tracing::info!(listener = %self.listener, file = %self.paths.cert.display(), "ACME certificate loaded");
                self.serve(certificate);
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(listener = %self.listener, %error, "stored ACME certificate ignored"),
        }
        loop {
            let next = self.next_attempt();
            self.status.next_attempt = Some(next);
            self.publish();
            let wait = next.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            self.status.next_attempt = None;
            self.publish();
            let order = tokio::time::timeout(ORDER_TIMEOUT, issue::issue(&self.config, &self.paths));
            let result = tokio::select! {
                () = stop.cancelled() => return,
                result = order => result.unwrap_or_else(|_| Err(IssueError::Order(format!("no certificate within {ORDER_TIMEOUT:?}")))),
            };
            match result.and_then(|issued| self.keep(issued)) {
                Ok(()) => {
                    self.status.consecutive_failures = 0;
                    self.status.last_success = Some(SystemTime::now());
                    self.count("issued");
                }
                Err(error) => {
                    self.status.consecutive_failures += 1;
                    self.status.last_error = Some((SystemTime::now(), error.to_string()));
                    self.count("failed");
                    tracing::error!(
                        listener = %self.listener,
                        names = ?self.config.names,
                        failures = self.status.consecutive_failures,
                        retry_in = ?self.backoff(),
                        "ACME order failed: {error}"
                    );
                }
            }
        }
    }

    /// When to order next: after a failure, the backoff; else the renewal
    /// point of the certificate being served (now, without one).
    fn next_attempt(&self) -> SystemTime {
        let now = SystemTime::now();
        if self.status.consecutive_failures > 0 {
            let failed_at = self.status.last_error.as_ref().map_or(now, |(at, _)| *at);
            return failed_at + self.backoff();
        }
        let renew_at = self.current.as_ref().map_or(now, |certificate| certificate.renew_at(self.config.renew_before));
        // Never order again right after a success, even for a certificate that is already due.
        let settled = self.status.last_success.map_or(now, |at| at + self.config.retry_min);
        renew_at.max(settled)
    }

    /// retry-min, doubled after each further failure, at most retry-max.
    fn backoff(&self) -> Duration {
        let doublings = self.status.consecutive_failures.saturating_sub(1).min(30);
        self.config.retry_min.saturating_mul(1 << doublings).min(self.config.retry_max)
    }

    /// Store a new certificate and serve it.
    fn keep(&mut self, issued: issue::Issued) -> Result<(), IssueError> {
        let certificate = Certificate::from_pem(issued.chain_pem.as_bytes(), issued.key_pem.as_bytes())
            .map_err(IssueError::Certificate)?;
        store::save_certificate(&self.paths, &issued.chain_pem, &issued.key_pem).map_err(IssueError::State)?;
        tracing::info!(
            listener = %self.listener,
            names = ?self.config.names,
            not_after_unix = unix(certificate.not_after),
            "ACME certificate issued and swapped in"
        );
        self.serve(certificate);
        Ok(())
    }

    fn serve(&mut self, certificate: Certificate) {
        super::install(&self.config.names, certificate.key.clone());
        self.status.certificate = Some((certificate.not_before, certificate.not_after));
        self.current = Some(certificate);
    }

    fn count(&self, result: &str) {
        let labels = vec![("listener", self.listener.clone()), ("result", result.to_string())];
        metrics::count("sluice_acme_orders_total", labels, 1);
    }

    fn publish(&self) {
        let labels = || vec![("listener", self.listener.clone())];
        let not_after = self.status.certificate.map_or(0, |(_, not_after)| unix(not_after));
        metrics::gauge_set("sluice_acme_certificate_expiry_timestamp_seconds", labels(), not_after as i64);
        let next = self.status.next_attempt.map_or(0, unix);
        metrics::gauge_set("sluice_acme_next_attempt_timestamp_seconds", labels(), next as i64);
        metrics::gauge_set("sluice_acme_consecutive_failures", labels(), self.status.consecutive_failures.into());
        super::set_status(&self.listener, self.status.clone());
    }
}

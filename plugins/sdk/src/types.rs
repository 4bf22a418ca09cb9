//! What plugins are handed and what they answer: plain Rust types, the same
//! inside WebAssembly and in native unit tests.

/// Facts about the client connection a decision is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conn {
    /// The name of the listener (from the proxy config) that accepted it.
    pub listener: String,
    /// The client's address as "ip:port" (from the PROXY header when trusted).
    pub client_addr: String,
    /// The local address the client connected to, as "ip:port".
    pub local_addr: String,
    /// Set once the stream is inside TLS that sluice terminated.
    pub tls: Option<TlsInfo>,
    /// Set while sniffing a stream that begins with a complete TLS ClientHello.
    pub hello: Option<TlsHello>,
    /// The tenant that owns the connection's server name, when the listener
    /// hosts tenants.
    pub tenant: Option<String>,
}

/// What the host learned from a TLS handshake it terminated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    pub server_name: Option<String>,
    pub alpn: Option<String>,
}

/// What a TLS ClientHello asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsHello {
    /// Lower-case, if the client sent one.
    pub server_name: Option<String>,
    /// The offered ALPN protocols, in the client's order.
    pub alpn: Vec<String>,
}

/// One HTTP header: a lower-case name and its raw value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

impl Header {
    pub fn new(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self { name: name.into().to_ascii_lowercase(), value: value.into() }
    }
}

/// An HTTP request head, as a route plugin sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Path and query, e.g. "/socket.io/?EIO=4&transport=polling".
    pub path: String,
    /// HTTP/2 `:authority` or the HTTP/1 `Host` header.
    pub authority: Option<String>,
    /// Only the headers the plugin's [`Manifest`] names, in the client's order.
    pub headers: Vec<Header>,
    pub conn: Conn,
}

impl Request {
    /// The first value of header `name` (compared ignoring case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_slice())
    }

    /// The first value of header `name`, if it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|value| std::str::from_utf8(value).ok())
    }

    /// Every value of header `name`, in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_slice())
    }
}

/// A route plugin's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send the request on to a backend.
    Forward(Forward),
    /// Answer the client directly.
    Respond(Response),
}

/// Send the request on to a backend, edited so.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forward {
    /// A backend the plugin's manifest declared.
    pub backend: String,
    /// A key that should reach the same server each time (sticky sessions).
    pub affinity: Option<String>,
    /// Headers to set (replacing any of the same name).
    pub set_headers: Vec<Header>,
    /// Header names to remove.
    pub remove_headers: Vec<String>,
    /// Replace the path and query sent to the backend.
    pub rewrite_path: Option<String>,
}

impl Forward {
    /// Forward to `backend`, unedited.
    pub fn to(backend: impl Into<String>) -> Self {
        Self { backend: backend.into(), ..Self::default() }
    }

    pub fn affinity(mut self, key: impl Into<String>) -> Self {
        self.affinity = Some(key.into());
        self
    }

    pub fn set_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.set_headers.push(Header::new(name, value));
        self
    }

    pub fn remove_header(mut self, name: impl Into<String>) -> Self {
        self.remove_headers.push(name.into().to_ascii_lowercase());
        self
    }

    pub fn rewrite_path(mut self, path: impl Into<String>) -> Self {
        self.rewrite_path = Some(path.into());
        self
    }
}

impl From<Forward> for Decision {
    fn from(forward: Forward) -> Self {
        Decision::Forward(forward)
    }
}

/// A synthetic response (redirects, 404s, maintenance pages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Self { status, headers: Vec::new(), body: Vec::new() }
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

impl From<Response> for Decision {
    fn from(response: Response) -> Self {
        Decision::Respond(response)
    }
}

/// A sniff plugin's answer about the first bytes of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Call again when more bytes have arrived.
    NeedMore,
    /// A TLS ClientHello: terminate TLS, then classify the plaintext.
    TerminateTls,
    /// HTTP/1.x or HTTP/2: serve it with the listener's HTTP stage.
    Http,
    /// Relay the raw bytes to the listener's default backend.
    ForwardDefault,
    /// Relay the raw bytes to this backend (one the manifest declared).
    Forward(String),
    /// Send these bytes to the client; close afterwards if `then_close`.
    Reply { data: Vec<u8>, then_close: bool },
    /// Close the connection; the reason is logged, never sent.
    Reject(String),
}

/// Which request headers a route plugin reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderInterest {
    /// Every header (costs a copy of each on every request).
    All,
    /// Only these lower-case names; empty: none.
    Only(Vec<String>),
}

/// What a plugin declares once it has accepted its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Every backend the plugin's decisions can name.
    pub backends: Vec<String>,
    /// The request headers `pick` reads (route plugins).
    pub headers: HeaderInterest,
}

impl Default for Manifest {
    fn default() -> Self {
        Self::new()
    }
}

impl Manifest {
    /// No backends, no headers: add what the plugin uses.
    pub fn new() -> Self {
        Self { backends: Vec::new(), headers: HeaderInterest::Only(Vec::new()) }
    }

    /// Declare one backend (duplicates are dropped).
    pub fn backend(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        if !self.backends.contains(&name) {
            self.backends.push(name);
        }
        self
    }

    /// Declare several backends.
    pub fn backends<S: Into<String>>(self, names: impl IntoIterator<Item = S>) -> Self {
        names.into_iter().fold(self, |manifest, name| manifest.backend(name))
    }

    /// Read one more header (name in any case); no effect after [`Manifest::all_headers`].
    pub fn header(mut self, name: impl Into<String>) -> Self {
        let name = name.into().to_ascii_lowercase();
        if let HeaderInterest::Only(names) = &mut self.headers
            && !names.contains(&name)
        {
            names.push(name);
        }
        self
    }

    /// Read several more headers.
    pub fn headers<S: Into<String>>(self, names: impl IntoIterator<Item = S>) -> Self {
        names.into_iter().fold(self, |manifest, name| manifest.header(name))
    }

    /// Read every header.
    pub fn all_headers(mut self) -> Self {
        self.headers = HeaderInterest::All;
        self
    }

    /// Whether `pick` gets header `name` (lower-case).
    pub fn reads_header(&self, name: &str) -> bool {
        match &self.headers {
            HeaderInterest::All => true,
            HeaderInterest::Only(names) => names.iter().any(|n| n.eq_ignore_ascii_case(name)),
        }
    }

    /// Whether a decision may name `backend`.
    pub fn declares_backend(&self, backend: &str) -> bool {
        self.backends.iter().any(|b| b == backend)
    }
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

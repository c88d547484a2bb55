//! DNS check: one query to a given server over UDP or TCP, with assertions.
//!
//! The query is built and sent by hand (hickory-proto for the wire format,
//! tokio sockets for transport) rather than through a resolver: a resolver
//! retries, caches, follows search lists and hides the response code and
//! flags, while a check must report exactly what one server answered to one
//! query and how long that took.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};
use regex::Regex;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use super::net::{Net, NetOptions, classify_connect_error, parse_server_addr};
use super::{Facts, Failure, Phase, Reason, Recorder, SpecError};

/// Query types a check may ask for. Deliberately short: these are the types
/// whose presentation format is stable enough to assert on.
const SUPPORTED_TYPES: [RecordType; 10] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::CNAME,
    RecordType::MX,
    RecordType::TXT,
    RecordType::NS,
    RecordType::SOA,
    RecordType::SRV,
    RecordType::CAA,
    RecordType::PTR,
];

/// The EDNS payload size we advertise: large enough that ordinary answers
/// fit in one datagram, so truncation (and the TCP retry) is the exception.
const EDNS_PAYLOAD: u16 = 4096;

/// How many answers a mismatch message quotes; enough to see what came back
/// without turning one line into a zone dump.
const QUOTED_ANSWERS: usize = 3;

/// The shortest time we keep listening after an unparseable datagram for a
/// valid response that may be racing it (see [`UdpWait`]).
const MALFORMED_GRACE_MIN: Duration = Duration::from_millis(200);

/// Transport used to send the query.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsTransport {
    /// One datagram each way; retried over TCP if the answer is truncated.
    #[default]
    Udp,
    /// A 2-byte length-prefixed message on a fresh TCP connection.
    Tcp,
}

impl DnsTransport {
    /// The stable name used in JSON ("udp", "tcp").
    pub fn as_str(self) -> &'static str {
        match self {
            DnsTransport::Udp => "udp",
            DnsTransport::Tcp => "tcp",
        }
    }
}

/// A DNS check as written by a user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsOptions {
    /// The server to ask: `IP`, `IP:port`, `[IPv6]:port`, or a host name
    /// (optionally `name:port`), resolved through `net`. Port 53 by default.
    pub server: String,
    /// The name to query.
    pub name: String,
    /// Record type to query (case-insensitive): A, AAAA, CNAME, MX, TXT, NS,
    /// SOA, SRV, CAA or PTR.
    #[serde(default = "default_query_type")]
    pub query_type: String,
    #[serde(default)]
    pub transport: DnsTransport,
    /// The RD flag: ask the server to recurse. Turn off to probe an
    /// authoritative server the way a resolver would.
    #[serde(default = "default_true")]
    pub recursion_desired: bool,
    /// Response codes that count as success (NOERROR, NXDOMAIN, ...).
    #[serde(default = "default_valid_rcodes")]
    pub valid_rcodes: Vec<String>,
    /// Each string must appear in the data of at least one answer.
    #[serde(default)]
    pub answer_contains: Vec<String>,
    /// Each regex must match the data of at least one answer.
    #[serde(default)]
    pub answer_regex: Vec<String>,
    /// Each regex must match the data of every answer (CNAMEs of a chain
    /// included, as they are in the answer section).
    #[serde(default)]
    pub answers_all_match: Vec<String>,
    /// Minimum number of records in the answer section.
    #[serde(default)]
    pub min_answers: usize,
    /// How to resolve a server given by name, and where to send from.
    #[serde(default)]
    pub net: NetOptions,
}

impl Default for DnsOptions {
    /// The serde defaults, with `server` and `name` empty (and so invalid).
    fn default() -> Self {
        Self {
            server: String::new(),
            name: String::new(),
            query_type: default_query_type(),
            transport: DnsTransport::default(),
            recursion_desired: true,
            valid_rcodes: default_valid_rcodes(),
            answer_contains: Vec::new(),
            answer_regex: Vec::new(),
            answers_all_match: Vec::new(),
            min_answers: 0,
            net: NetOptions::default(),
        }
    }
}

fn default_query_type() -> String {
    "A".to_owned()
}

fn default_true() -> bool {
    true
}

fn default_valid_rcodes() -> Vec<String> {
    vec!["NOERROR".to_owned()]
}

/// What a DNS check saw. Field names are a stable JSON contract; fields that
/// need a response are `null` when none arrived.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DnsFacts {
    /// The server queried: the socket address once known, the configured
    /// server before that (e.g. if resolving its name failed).
    pub server: String,
    /// The transport of the reported response ("tcp" after a truncated-UDP retry).
    pub transport: DnsTransport,
    /// The query name, fully qualified.
    pub query_name: String,
    pub query_type: String,
    /// Response code name, e.g. "NOERROR" (`RCODE<n>` for unnamed codes).
    #[serde(default)]
    pub rcode: Option<String>,
    #[serde(default)]
    pub flags: Option<DnsFlags>,
    #[serde(default)]
    pub answers: Vec<DnsRecord>,
    #[serde(default)]
    pub authority: Vec<DnsRecord>,
    /// Additional section, without the EDNS OPT pseudo-record.
    #[serde(default)]
    pub additional: Vec<DnsRecord>,
    /// Time spent waiting for answers: from sending the query to receiving
    /// the response, summed over the UDP try and the TCP retry if any.
    #[serde(with = "opt_secs", rename = "lookup_time_seconds", default)]
    pub lookup_time: Option<Duration>,
    /// The UDP answer was truncated and the query was repeated over TCP.
    #[serde(default)]
    pub truncated_retry: bool,
    /// UDP datagrams received but not taken as the answer: unparseable, not
    /// a response, or for another id or question (stale or spoofed).
    #[serde(default)]
    pub ignored_datagrams: u32,
}

/// Header flags of the response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsFlags {
    pub authoritative: bool,
    pub truncated: bool,
    pub recursion_available: bool,
    pub authentic_data: bool,
}

/// One resource record, in presentation format.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    pub name: String,
    /// Record type mnemonic, e.g. "MX".
    #[serde(rename = "type")]
    pub record_type: String,
    pub ttl: u32,
    /// Record data as in a zone file ("10 mail.example.com." for MX); the
    /// character strings of a TXT record are joined.
    pub data: String,
}

/// Where to send the query, as parsed at build time.
#[derive(Debug, Clone)]
enum Server {
    Addr(SocketAddr),
    Host { host: String, port: u16 },
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Server::Addr(a) => write!(f, "{a}"),
            Server::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

#[derive(Debug)]
pub(crate) struct DnsCheck {
    target: String,
    server: Server,
    net: Net,
    name: Name,
    query_type: RecordType,
    transport: DnsTransport,
    recursion_desired: bool,
    /// Numeric values of the accepted response codes.
    valid_rcodes: Vec<u16>,
    /// The accepted codes as the user wrote them (upper-cased), for messages.
    valid_rcode_names: Vec<String>,
    answer_contains: Vec<String>,
    answer_regex: Vec<Regex>,
    answers_all_match: Vec<Regex>,
    min_answers: usize,
}

impl DnsCheck {
    pub(crate) fn build(o: &DnsOptions) -> Result<Self, SpecError> {
        let server = parse_server(&o.server).map_err(|m| SpecError::new("server", m))?;
        let name = parse_name(&o.name).map_err(|m| SpecError::new("name", m))?;
        let query_type = parse_query_type(&o.query_type)?;

        if o.valid_rcodes.is_empty() {
            return Err(SpecError::new(
                "valid_rcodes",
                "must list at least one response code",
            ));
        }
        let mut valid_rcodes = Vec::with_capacity(o.valid_rcodes.len());
        let mut valid_rcode_names = Vec::with_capacity(o.valid_rcodes.len());
        for s in &o.valid_rcodes {
            let upper = s.trim().to_ascii_uppercase();
            let code = rcode_from_name(&upper).ok_or_else(|| {
                SpecError::new(
                    "valid_rcodes",
                    format!(
                        "unknown response code {s:?}; expected one of {}",
                        RCODE_NAMES
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
            valid_rcodes.push(code);
            valid_rcode_names.push(upper);
        }

        let answer_regex = compile_all(&o.answer_regex, "answer_regex")?;
        let answers_all_match = compile_all(&o.answers_all_match, "answers_all_match")?;

        let net = Net::build(&o.net)
            .map_err(|e| SpecError::new(format!("net.{}", e.field), e.message))?;

        // Encode a query once now so a name the wire format rejects fails
        // here, not on every run.
        query_message(&name, query_type, o.recursion_desired)
            .to_vec()
            .map_err(|e| SpecError::new("name", format!("cannot encode a query for it: {e}")))?;

        Ok(Self {
            target: format!("{} {} @{}", name, query_type, server),
            server,
            net,
            name,
            query_type,
            transport: o.transport,
            recursion_desired: o.recursion_desired,
            valid_rcodes,
            valid_rcode_names,
            answer_contains: o.answer_contains.clone(),
            answer_regex,
            answers_all_match,
            min_answers: o.min_answers,
        })
    }

    /// `name TYPE @server`, as dig users read it.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    pub(crate) async fn run(
        &self,
        rec: &mut Recorder,
        facts: &mut Facts,
    ) -> Result<String, Failure> {
        let df = facts.dns.insert(DnsFacts {
            server: self.server.to_string(),
            transport: self.transport,
            query_name: self.name.to_string(),
            query_type: self.query_type.to_string(),
            ..DnsFacts::default()
        });

        let addrs = match &self.server {
            Server::Addr(a) => vec![*a],
            Server::Host { host, port } => self
                .net
                .resolve(host, rec)
                .await?
                .into_iter()
                .map(|ip| SocketAddr::new(ip, *port))
                .collect(),
        };

        let query = query_message(&self.name, self.query_type, self.recursion_desired);
        let wire = query
            .to_vec()
            .map_err(|e| Failure::new(Reason::DnsMalformed, format!("encoding the query: {e}")))?;

        let mut lookup_time = Duration::ZERO;
        let response = match self.transport {
            DnsTransport::Udp => {
                let (response, server, rtt) =
                    self.query_udp(&addrs, &query, &wire, rec, df).await?;
                lookup_time += rtt;
                if response.metadata.truncation {
                    // Keep what UDP showed in case the retry fails, then say
                    // that what follows is over TCP.
                    record_response(df, &response, lookup_time);
                    df.transport = DnsTransport::Tcp;
                    df.truncated_retry = true;
                    let (response, rtt) = self.query_tcp(&[server], &query, &wire, rec, df).await?;
                    lookup_time += rtt;
                    response
                } else {
                    response
                }
            }
            DnsTransport::Tcp => {
                let (response, rtt) = self.query_tcp(&addrs, &query, &wire, rec, df).await?;
                lookup_time += rtt;
                response
            }
        };
        record_response(df, &response, lookup_time);

        self.assert(&response, df)?;
        Ok(format!(
            "{}, {} answer{} in {}",
            rcode_name(response.metadata.response_code),
            df.answers.len(),
            if df.answers.len() == 1 { "" } else { "s" },
            format_duration(lookup_time)
        ))
    }

    /// Sends the query over UDP to the first address a socket can be
    /// connected to and waits for the matching response. Returns it with
    /// the address used and the round trip.
    async fn query_udp(
        &self,
        addrs: &[SocketAddr],
        query: &Message,
        wire: &[u8],
        rec: &mut Recorder,
        df: &mut DnsFacts,
    ) -> Result<(Message, SocketAddr, Duration), Failure> {
        let (socket, server) = self.udp_socket(addrs).await?;
        df.server = server.to_string();

        let sent = Instant::now();
        rec.start_at(Phase::Processing, sent);
        socket
            .send(wire)
            .await
            .map_err(|e| udp_io_failure(server, "sending the query", &e))?;

        let mut buf = vec![0u8; 64 * 1024];
        let mut wait = UdpWait::default();
        loop {
            let received = match wait.grace_until {
                None => socket.recv(&mut buf).await,
                Some(until) => match tokio::time::timeout_at(until, socket.recv(&mut buf)).await {
                    Ok(r) => r,
                    Err(_) => return Err(wait.failure(server)),
                },
            };
            let n = received.map_err(|e| udp_io_failure(server, "waiting for the response", &e))?;
            let at = Instant::now();
            match Message::from_vec(&buf[..n]) {
                Ok(msg) if is_response_to(&msg, query) => {
                    rec.end_at(at);
                    return Ok((msg, server, at.saturating_duration_since(sent)));
                }
                Ok(_) => df.ignored_datagrams = df.ignored_datagrams.saturating_add(1),
                Err(e) => {
                    df.ignored_datagrams = df.ignored_datagrams.saturating_add(1);
                    wait.malformed(e.to_string(), sent, at);
                }
            }
        }
    }

    /// Binds a fresh socket (from `net.source_address` if set) and connects
    /// it to the first address that accepts, so the kernel drops datagrams
    /// from anyone else and reports ICMP errors to us.
    async fn udp_socket(&self, addrs: &[SocketAddr]) -> Result<(UdpSocket, SocketAddr), Failure> {
        let source = self.net.options().source_address;
        let mut last = Failure::new(Reason::ConnectError, "no address to send to");
        for &addr in addrs {
            let local = match source {
                Some(src) if src.is_ipv4() != addr.is_ipv4() => {
                    last = Failure::new(
                        Reason::ConnectError,
                        format!("source address {src} cannot reach {addr}"),
                    );
                    continue;
                }
                Some(src) => SocketAddr::new(src, 0),
                None if addr.is_ipv4() => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
                None => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
            };
            let attempt = async {
                let socket = UdpSocket::bind(local).await?;
                socket.connect(addr).await?;
                Ok::<_, std::io::Error>(socket)
            };
            match attempt.await {
                Ok(socket) => return Ok((socket, addr)),
                Err(e) => last = classify_connect_error(addr, &e),
            }
        }
        Err(last)
    }

    /// Sends the query on a fresh TCP connection and reads one
    /// length-prefixed response. Returns it with the round trip (connect
    /// excluded).
    async fn query_tcp(
        &self,
        addrs: &[SocketAddr],
        query: &Message,
        wire: &[u8],
        rec: &mut Recorder,
        df: &mut DnsFacts,
    ) -> Result<(Message, Duration), Failure> {
        let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
        // Every address of a resolved server shares the configured port.
        let port = addrs.first().map_or(53, SocketAddr::port);
        let (mut stream, server) = self.net.connect(&ips, port, rec).await?;
        df.server = server.to_string();

        let len = u16::try_from(wire.len())
            .map_err(|_| Failure::new(Reason::DnsMalformed, "query too long for a TCP message"))?;
        let mut framed = Vec::with_capacity(wire.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(wire);

        let sent = Instant::now();
        rec.start_at(Phase::Processing, sent);
        stream.write_all(&framed).await.map_err(|e| {
            Failure::new(
                Reason::IoError,
                format!("sending the query to {server}: {e}"),
            )
        })?;
        let body = read_tcp_message(&mut stream, server).await?;
        let at = Instant::now();
        rec.end_at(at);

        let msg = Message::from_vec(&body).map_err(|e| {
            Failure::new(
                Reason::DnsMalformed,
                format!("{server} sent an unparseable response: {e}"),
            )
        })?;
        if !is_response_to(&msg, query) {
            return Err(Failure::new(
                Reason::DnsMalformed,
                format!(
                    "{server} answered another query over TCP (id {}, expected {})",
                    msg.metadata.id, query.metadata.id
                ),
            ));
        }
        Ok((msg, at.saturating_duration_since(sent)))
    }

    /// The assertions, in order: rcode, answer count, answer content.
    fn assert(&self, response: &Message, df: &DnsFacts) -> Result<(), Failure> {
        let rcode = response.metadata.response_code;
        if !self.valid_rcodes.contains(&u16::from(rcode)) {
            return Err(Failure::new(
                Reason::DnsRcode,
                format!(
                    "response code {} is not one of {}",
                    rcode_name(rcode),
                    self.valid_rcode_names.join(", ")
                ),
            ));
        }

        let answers = &df.answers;
        if answers.len() < self.min_answers {
            return Err(Failure::new(
                Reason::DnsTooFewAnswers,
                format!(
                    "{} answer{}, at least {} required",
                    answers.len(),
                    if answers.len() == 1 { "" } else { "s" },
                    self.min_answers
                ),
            ));
        }

        for s in &self.answer_contains {
            if !answers.iter().any(|a| a.data.contains(s.as_str())) {
                return Err(mismatch(
                    format!("answer_contains: no answer contains {s:?}"),
                    answers,
                ));
            }
        }
        for re in &self.answer_regex {
            if !answers.iter().any(|a| re.is_match(&a.data)) {
                return Err(mismatch(
                    format!("answer_regex: no answer matches /{re}/"),
                    answers,
                ));
            }
        }
        for re in &self.answers_all_match {
            if let Some(bad) = answers.iter().find(|a| !re.is_match(&a.data)) {
                return Err(mismatch(
                    format!(
                        "answers_all_match: {} answer {:?} does not match /{re}/",
                        bad.record_type, bad.data
                    ),
                    answers,
                ));
            }
            if answers.is_empty() {
                // "All of nothing matches" would pass a check whose whole
                // point is that answers look a certain way.
                return Err(mismatch(
                    format!("answers_all_match: no answers to match /{re}/"),
                    answers,
                ));
            }
        }
        Ok(())
    }
}

/// State of the UDP receive loop after unparseable datagrams.
///
/// A datagram from the server's address that is not a DNS message at all is
/// most likely the server's broken answer, but it could also be a forgery
/// racing the genuine one. So instead of failing at once we keep listening
/// for a grace period — twice the round trip seen so far, at least
/// [`MALFORMED_GRACE_MIN`] — and only report `dns_malformed` if nothing
/// valid arrives in it. Parseable messages with the wrong id or question
/// never start the grace: they say nothing about our server's health, so
/// they are ignored until the overall deadline.
#[derive(Default)]
struct UdpWait {
    malformed: u32,
    last_error: String,
    grace_until: Option<Instant>,
}

impl UdpWait {
    fn malformed(&mut self, error: String, sent: Instant, at: Instant) {
        self.malformed += 1;
        self.last_error = error;
        if self.grace_until.is_none() {
            let rtt = at.saturating_duration_since(sent);
            self.grace_until = Some(at + (rtt * 2).max(MALFORMED_GRACE_MIN));
        }
    }

    /// The failure once the grace has passed with nothing valid.
    fn failure(&self, server: SocketAddr) -> Failure {
        Failure::new(
            Reason::DnsMalformed,
            format!(
                "{server} sent no valid response, only {} unparseable datagram{} (last: {})",
                self.malformed,
                if self.malformed == 1 { "" } else { "s" },
                self.last_error
            ),
        )
    }
}

/// Reads one 2-byte length-prefixed DNS message. The length is a u16, so the
/// read is bounded at 64 KiB whatever the server claims.
async fn read_tcp_message(stream: &mut TcpStream, server: SocketAddr) -> Result<Vec<u8>, Failure> {
    let mut len = [0u8; 2];
    read_fully(stream, &mut len)
        .await
        .map_err(|(got, e)| match e {
            Some(e) => Failure::new(
                Reason::IoError,
                format!("reading the response from {server}: {e}"),
            ),
            None if got == 0 => Failure::new(
                Reason::IoError,
                format!("{server} closed the connection without answering"),
            ),
            None => Failure::new(
                Reason::DnsMalformed,
                format!("{server} closed the connection inside the length prefix"),
            ),
        })?;
    let len = usize::from(u16::from_be_bytes(len));
    if len == 0 {
        return Err(Failure::new(
            Reason::DnsMalformed,
            format!("{server} sent an empty (zero-length) message"),
        ));
    }
    let mut body = vec![0u8; len];
    read_fully(stream, &mut body)
        .await
        .map_err(|(got, e)| match e {
            Some(e) => Failure::new(
                Reason::IoError,
                format!("reading the response from {server}: {e}"),
            ),
            None => Failure::new(
                Reason::IoError,
                format!("{server} closed the connection after {got} of {len} response bytes"),
            ),
        })?;
    Ok(body)
}

/// Fills `buf`, or says how many bytes came before EOF (`None`) or an error.
async fn read_fully(
    stream: &mut TcpStream,
    buf: &mut [u8],
) -> Result<(), (usize, Option<std::io::Error>)> {
    let mut got = 0;
    while got < buf.len() {
        match stream.read(&mut buf[got..]).await {
            Ok(0) => return Err((got, None)),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err((got, Some(e))),
        }
    }
    Ok(())
}

/// Maps a UDP socket error. ECONNREFUSED on a connected UDP socket is the
/// kernel relaying an ICMP port unreachable: nothing listens there.
fn udp_io_failure(server: SocketAddr, doing: &str, e: &std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::ConnectionRefused {
        Failure::new(
            Reason::ConnectRefused,
            format!("{server}: port unreachable (ICMP) while {doing}"),
        )
    } else {
        Failure::new(Reason::IoError, format!("{server}: {doing}: {e}"))
    }
}

/// A fresh query (random id) for one question, advertising EDNS so large
/// answers are not needlessly truncated.
fn query_message(name: &Name, query_type: RecordType, recursion_desired: bool) -> Message {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = recursion_desired;
    msg.add_query(Query::query(name.clone(), query_type));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    msg.set_edns(edns);
    msg
}

/// Whether `msg` answers `query`: a response with the same id and the same
/// question. Error responses (FORMERR and the like) may legitimately omit
/// the question; for those the id must do.
fn is_response_to(msg: &Message, query: &Message) -> bool {
    if msg.metadata.message_type != MessageType::Response || msg.metadata.id != query.metadata.id {
        return false;
    }
    if msg.queries.is_empty() {
        return msg.metadata.response_code != ResponseCode::NoError;
    }
    msg.queries == query.queries
}

/// Copies what the response says into the facts.
fn record_response(df: &mut DnsFacts, msg: &Message, lookup_time: Duration) {
    let m = &msg.metadata;
    df.rcode = Some(rcode_name(m.response_code));
    df.flags = Some(DnsFlags {
        authoritative: m.authoritative,
        truncated: m.truncation,
        recursion_available: m.recursion_available,
        authentic_data: m.authentic_data,
    });
    df.answers = records(&msg.answers);
    df.authority = records(&msg.authorities);
    df.additional = records(&msg.additionals);
    df.lookup_time = Some(lookup_time);
}

fn records(rs: &[Record]) -> Vec<DnsRecord> {
    rs.iter()
        // OPT is EDNS metadata, not data (and has no presentation format).
        .filter(|r| r.record_type() != RecordType::OPT)
        .map(|r| {
            let mut data = String::new();
            // Display of RData can fail for types without a presentation
            // format; show the type's generic placeholder rather than panic.
            if write!(data, "{}", r.data).is_err() {
                data = "\\# (no presentation format)".to_owned();
            }
            DnsRecord {
                name: r.name.to_string(),
                record_type: r.record_type().to_string(),
                ttl: r.ttl,
                data,
            }
        })
        .collect()
}

fn mismatch(what: String, answers: &[DnsRecord]) -> Failure {
    let mut msg = what;
    if answers.is_empty() {
        msg.push_str(" (no answers)");
    } else {
        let shown: Vec<String> = answers
            .iter()
            .take(QUOTED_ANSWERS)
            .map(|a| format!("{} {}", a.record_type, a.data))
            .collect();
        let _ = write!(msg, " (answers: {}", shown.join("; "));
        if answers.len() > QUOTED_ANSWERS {
            let _ = write!(msg, "; and {} more", answers.len() - QUOTED_ANSWERS);
        }
        msg.push(')');
    }
    Failure::new(Reason::DnsAnswerMismatch, msg)
}

/// Parses `IP`, `IP:port`, `[IPv6]:port`, `host` or `host:port`.
fn parse_server(s: &str) -> Result<Server, String> {
    if s.is_empty() {
        return Err("must not be empty".to_owned());
    }
    // parse_server_addr trims brackets leniently ("[::1" passes); a
    // half-bracketed address is a typo worth reporting.
    if s.starts_with('[') != s.contains(']') {
        return Err(format!("unbalanced brackets in {s:?}"));
    }
    if let Ok(addr) = parse_server_addr(s, 53) {
        if addr.port() == 0 {
            return Err(format!("port 0 in {s:?} is not a server port"));
        }
        return Ok(Server::Addr(addr));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((host, port)) => {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("invalid port {port:?} in {s:?}"))?;
            (host, port)
        }
        None => (s, 53),
    };
    if port == 0 {
        return Err(format!("port 0 in {s:?} is not a server port"));
    }
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host.split('.').enumerate().all(|(i, label)| {
            // A trailing dot (empty last label) is allowed.
            (label.is_empty() && i > 0 && host.ends_with('.'))
                || (!label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        });
    if !valid_host {
        return Err(format!(
            "expected IP, IP:port, [IPv6]:port, host or host:port, got {s:?}"
        ));
    }
    Ok(Server::Host {
        host: host.to_owned(),
        port,
    })
}

/// Parses the query name and makes it fully qualified: the check asks
/// exactly this name, never a search-list expansion of it.
fn parse_name(s: &str) -> Result<Name, String> {
    if s.is_empty() {
        return Err("must not be empty (use \".\" for the root)".to_owned());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{s:?} is not a valid DNS name: contains whitespace"
        ));
    }
    let mut name =
        Name::from_str_relaxed(s).map_err(|e| format!("{s:?} is not a valid DNS name: {e}"))?;
    name.set_fqdn(true);
    Ok(name)
}

fn parse_query_type(s: &str) -> Result<RecordType, SpecError> {
    let upper = s.trim().to_ascii_uppercase();
    SUPPORTED_TYPES
        .iter()
        .copied()
        .find(|t| t.to_string() == upper)
        .ok_or_else(|| {
            SpecError::new(
                "query_type",
                format!(
                    "unsupported query type {s:?}; supported: {}",
                    SUPPORTED_TYPES
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
}

fn compile_all(patterns: &[String], field: &str) -> Result<Vec<Regex>, SpecError> {
    patterns
        .iter()
        .map(|p| {
            Regex::new(p).map_err(|e| SpecError::new(field, format!("invalid regex {p:?}: {e}")))
        })
        .collect()
}

/// Response code mnemonics as in RFC 6895 (what dig prints), with their values.
const RCODE_NAMES: [(&str, u16); 19] = [
    ("NOERROR", 0),
    ("FORMERR", 1),
    ("SERVFAIL", 2),
    ("NXDOMAIN", 3),
    ("NOTIMP", 4),
    ("REFUSED", 5),
    ("YXDOMAIN", 6),
    ("YXRRSET", 7),
    ("NXRRSET", 8),
    ("NOTAUTH", 9),
    ("NOTZONE", 10),
    ("BADVERS", 16),
    ("BADKEY", 17),
    ("BADTIME", 18),
    ("BADMODE", 19),
    ("BADNAME", 20),
    ("BADALG", 21),
    ("BADTRUNC", 22),
    ("BADCOOKIE", 23),
];

fn rcode_from_name(upper: &str) -> Option<u16> {
    RCODE_NAMES
        .iter()
        .find(|(n, _)| *n == upper)
        .map(|(_, v)| *v)
}

/// The mnemonic of a response code; hickory's Display gives prose ("Non-Existent Domain").
fn rcode_name(code: ResponseCode) -> String {
    let v = u16::from(code);
    match RCODE_NAMES.iter().find(|(_, c)| *c == v) {
        Some((n, _)) => (*n).to_owned(),
        None => format!("RCODE{v}"),
    }
}

/// Short human duration for messages: "1.2ms", "2.35s".
fn format_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1}ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

/// Serde helpers: optional `Duration` as fractional seconds (`null` if unknown).
mod opt_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|v| Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(server: &str, name: &str) -> DnsOptions {
        DnsOptions {
            server: server.to_owned(),
            name: name.to_owned(),
            ..DnsOptions::default()
        }
    }

    #[test]
    fn server_forms() {
        for (s, want) in [
            ("192.0.2.1", "192.0.2.1:53"),
            ("192.0.2.1:5353", "192.0.2.1:5353"),
            ("[2001:db8::1]:54", "[2001:db8::1]:54"),
            ("2001:db8::1", "[2001:db8::1]:53"),
            ("ns1.example.com", "ns1.example.com:53"),
            ("ns1.example.com.:5300", "ns1.example.com.:5300"),
        ] {
            assert_eq!(parse_server(s).unwrap().to_string(), want, "{s}");
        }
        for bad in [
            "",
            "a b",
            "[::1",
            "host:0",
            "host:99999",
            "1.2.3.4:0",
            "::1:x:y:z",
        ] {
            assert!(parse_server(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn names_are_fully_qualified() {
        assert_eq!(
            parse_name("example.com").unwrap().to_string(),
            "example.com."
        );
        assert_eq!(
            parse_name("_sip._tcp.example.com.").unwrap().to_string(),
            "_sip._tcp.example.com."
        );
        assert_eq!(parse_name(".").unwrap().to_string(), ".");
        assert!(parse_name("").is_err());
        assert!(parse_name("a b.com").is_err());
        assert!(parse_name(&format!("{}.com", "a".repeat(64))).is_err());
    }

    #[test]
    fn query_types_and_rcodes() {
        assert_eq!(parse_query_type("mx").unwrap(), RecordType::MX);
        let e = parse_query_type("ANY").unwrap_err();
        assert_eq!(e.field, "query_type");
        assert!(e.message.contains("CAA"), "{}", e.message);
        assert_eq!(rcode_name(ResponseCode::NXDomain), "NXDOMAIN");
        assert_eq!(rcode_name(ResponseCode::Unknown(3000)), "RCODE3000");
        assert_eq!(rcode_from_name("SERVFAIL"), Some(2));
    }

    #[test]
    fn build_validates_fields() {
        let field = |o: DnsOptions| DnsCheck::build(&o).unwrap_err().field;
        let base = opts("127.0.0.1", "example.com");
        assert!(DnsCheck::build(&base).is_ok());
        assert_eq!(
            field(DnsOptions {
                valid_rcodes: vec!["NOPE".into()],
                ..base.clone()
            }),
            "valid_rcodes"
        );
        assert_eq!(
            field(DnsOptions {
                answers_all_match: vec!["(".into()],
                ..base.clone()
            }),
            "answers_all_match"
        );
        assert_eq!(
            field(DnsOptions {
                net: NetOptions {
                    dns_server: Some("nope".into()),
                    ..NetOptions::default()
                },
                ..base.clone()
            }),
            "net.dns_server"
        );
        assert_eq!(field(opts("127.0.0.1", "")), "name");
    }

    #[test]
    fn options_serde_defaults_and_unknown_fields() {
        let o: DnsOptions =
            serde_json::from_str(r#"{"server":"127.0.0.1","name":"example.com"}"#).unwrap();
        assert_eq!(o, opts("127.0.0.1", "example.com"));
        assert!(
            serde_json::from_str::<DnsOptions>(r#"{"server":"x","name":"y","nmae":1}"#).is_err()
        );
        let o: DnsOptions = serde_json::from_str(
            r#"{"server":"x","name":"y","transport":"tcp","net":{"ip_preference":"ip4"}}"#,
        )
        .unwrap();
        assert_eq!(o.transport, DnsTransport::Tcp);
    }

    #[test]
    fn facts_json_field_names() {
        let f = DnsFacts {
            lookup_time: Some(Duration::from_millis(1500)),
            ..DnsFacts::default()
        };
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["lookup_time_seconds"], 1.5);
        assert_eq!(v["transport"], "udp");
        assert!(v["rcode"].is_null());
        let back: DnsFacts = serde_json::from_value(v).unwrap();
        assert_eq!(back, f);
        let r = serde_json::to_value(DnsRecord {
            record_type: "MX".into(),
            ..DnsRecord::default()
        })
        .unwrap();
        assert_eq!(r["type"], "MX");
    }

    #[test]
    fn mismatch_quotes_a_few_answers() {
        let a = |d: &str| DnsRecord {
            name: "x.".into(),
            record_type: "A".into(),
            ttl: 1,
            data: d.into(),
        };
        let f = mismatch(
            "answer_regex: x".into(),
            &[a("1"), a("2"), a("3"), a("4"), a("5")],
        );
        assert_eq!(f.reason, Reason::DnsAnswerMismatch);
        assert_eq!(
            f.message,
            "answer_regex: x (answers: A 1; A 2; A 3; and 2 more)"
        );
    }
}

//! DNS check against real servers on loopback: an in-process hickory-server
//! serving a small zone, plus tiny hand-written UDP "servers" for the
//! misbehaviours a real server will not produce on demand (silence, garbage,
//! wrong ids, truncation).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, OpCode};
use hickory_proto::rr::rdata::{A, AAAA, CAA, CNAME, MX, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_server::Server;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use tokio::net::{TcpListener, UdpSocket};
use varde::check::dns::DnsTransport;
use varde::check::{CheckResult, CheckSpec, DnsOptions, Phase, Reason};

const TIMEOUT: Duration = Duration::from_secs(5);

fn name(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

fn rec(owner: &str, data: RData) -> Record {
    Record::from_rdata(name(owner), 300, data)
}

/// A zone handler holding `records` for the zone `origin` (whose SOA must be
/// among them).
fn zone(origin: &str, records: Vec<Record>) -> Arc<dyn ZoneHandler> {
    let mut z: InMemoryZoneHandler =
        InMemoryZoneHandler::empty(name(origin), ZoneType::Primary, AxfrPolicy::Deny);
    for r in records {
        assert!(z.upsert_mut(r, 1), "record rejected by the zone");
    }
    Arc::new(z)
}

fn soa(origin: &str) -> Record {
    rec(
        origin,
        RData::SOA(SOA::new(
            name("ns1.example.test."),
            name("hostmaster.example.test."),
            2024010101,
            3600,
            600,
            86400,
            300,
        )),
    )
}

/// example.test. with one or more records of every supported type, and a
/// reverse zone for PTR.
fn catalog() -> Catalog {
    let example = zone(
        "example.test.",
        vec![
            soa("example.test."),
            rec("example.test.", RData::NS(NS(name("ns1.example.test.")))),
            rec(
                "ns1.example.test.",
                RData::A(A(Ipv4Addr::new(192, 0, 2, 53))),
            ),
            rec(
                "www.example.test.",
                RData::A(A(Ipv4Addr::new(192, 0, 2, 10))),
            ),
            rec(
                "www.example.test.",
                RData::A(A(Ipv4Addr::new(192, 0, 2, 11))),
            ),
            rec(
                "www.example.test.",
                RData::AAAA(AAAA(Ipv6Addr::from_str("2001:db8::10").unwrap())),
            ),
            rec(
                "example.test.",
                RData::MX(MX::new(10, name("mail.example.test."))),
            ),
            rec(
                "mail.example.test.",
                RData::A(A(Ipv4Addr::new(192, 0, 2, 25))),
            ),
            rec(
                "example.test.",
                RData::TXT(TXT::new(vec!["v=spf1 ".into(), "-all".into()])),
            ),
            rec(
                "alias.example.test.",
                RData::CNAME(CNAME(name("www.example.test."))),
            ),
            rec(
                "_sip._tcp.example.test.",
                RData::SRV(SRV::new(10, 60, 5060, name("sip.example.test."))),
            ),
            rec(
                "example.test.",
                RData::CAA(CAA::new_issue(false, Some(name("ca.example.net")), vec![])),
            ),
        ],
    );
    let reverse = zone(
        "2.0.192.in-addr.arpa.",
        vec![
            soa("2.0.192.in-addr.arpa."),
            rec(
                "10.2.0.192.in-addr.arpa.",
                RData::PTR(PTR(name("www.example.test."))),
            ),
        ],
    );
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::new(&name("example.test.")), vec![example]);
    catalog.upsert(
        LowerName::new(&name("2.0.192.in-addr.arpa.")),
        vec![reverse],
    );
    catalog
}

/// Binds a UDP socket and a TCP listener on the same loopback port, as a
/// DNS server has them. Retries because the port free for UDP may be taken
/// for TCP.
async fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        if let Ok(tcp) = TcpListener::bind(addr).await {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

/// A real DNS server (UDP and TCP on one port). Dropping the returned
/// `Server` stops it, so tests keep it alive for their duration.
async fn dns_server() -> (Server<Catalog>, SocketAddr) {
    let (udp, tcp) = bind_pair().await;
    let addr = udp.local_addr().unwrap();
    let mut server = Server::new(catalog());
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 32);
    (server, addr)
}

fn options(server: SocketAddr, qname: &str, qtype: &str) -> DnsOptions {
    DnsOptions {
        server: server.to_string(),
        name: qname.to_owned(),
        query_type: qtype.to_owned(),
        ..DnsOptions::default()
    }
}

async fn run(o: DnsOptions) -> CheckResult {
    run_with(o, TIMEOUT).await
}

async fn run_with(o: DnsOptions, timeout: Duration) -> CheckResult {
    CheckSpec::Dns(o)
        .build(timeout)
        .expect("valid check")
        .run()
        .await
}

fn answer_data(r: &CheckResult) -> Vec<String> {
    let mut v: Vec<String> = r
        .dns
        .as_ref()
        .unwrap()
        .answers
        .iter()
        .map(|a| a.data.clone())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn each_supported_type_over_udp_returns_its_answers() {
    let (_server, addr) = dns_server().await;
    let cases: [(&str, &str, &[&str]); 10] = [
        ("www.example.test", "A", &["192.0.2.10", "192.0.2.11"]),
        ("www.example.test", "AAAA", &["2001:db8::10"]),
        ("alias.example.test", "CNAME", &["www.example.test."]),
        ("example.test", "MX", &["10 mail.example.test."]),
        // The character strings of a TXT record are joined.
        ("example.test", "TXT", &["v=spf1 -all"]),
        ("example.test", "NS", &["ns1.example.test."]),
        (
            "example.test",
            "SOA",
            &["ns1.example.test. hostmaster.example.test. 2024010101 3600 600 86400 300"],
        ),
        (
            "_sip._tcp.example.test",
            "SRV",
            &["10 60 5060 sip.example.test."],
        ),
        ("example.test", "CAA", &["0 issue \"ca.example.net\""]),
        ("10.2.0.192.in-addr.arpa", "ptr", &["www.example.test."]),
    ];
    for (qname, qtype, want) in cases {
        let r = run(options(addr, qname, qtype)).await;
        assert!(r.success, "{qname} {qtype}: {:?} {}", r.reason, r.message);
        assert_eq!(answer_data(&r), want, "{qname} {qtype}");
        let dns = r.dns.as_ref().unwrap();
        assert_eq!(dns.transport, DnsTransport::Udp);
        assert_eq!(dns.server, addr.to_string());
        assert_eq!(dns.query_name, format!("{qname}."));
        assert_eq!(dns.query_type, qtype.to_ascii_uppercase());
        assert_eq!(dns.rcode.as_deref(), Some("NOERROR"));
        assert!(dns.flags.unwrap().authoritative, "{qname} {qtype}");
        assert!(!dns.truncated_retry);
        assert_eq!(dns.ignored_datagrams, 0);
        for a in &dns.answers {
            assert_eq!(a.record_type, qtype.to_ascii_uppercase());
            assert_eq!(a.ttl, 300);
            assert_eq!(a.name, format!("{qname}."));
        }
        // lookup_time is the processing phase: the query's round trip.
        assert_eq!(dns.lookup_time, Some(r.phases.processing));
        assert_eq!(r.phases.connect, Duration::ZERO, "UDP has no connect phase");
        let n = want.len();
        assert!(
            r.message.starts_with(&format!("NOERROR, {n} answer")),
            "{}",
            r.message
        );
    }
}

#[tokio::test]
async fn authority_section_is_reported_and_opt_is_not_an_additional() {
    let (_server, addr) = dns_server().await;
    let r = run(options(addr, "www.example.test", "A")).await;
    let dns = r.dns.unwrap();
    // Whatever the server puts in the additional section, the EDNS OPT
    // pseudo-record it echoes is not data.
    assert!(dns.additional.iter().all(|a| a.record_type != "OPT"));
    let json = serde_json::to_value(json_roundtrip(&dns)).unwrap();
    assert!(json["lookup_time_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(json["answers"][0]["type"], "A");
}

fn json_roundtrip(f: &varde::check::DnsFacts) -> varde::check::DnsFacts {
    serde_json::from_value(serde_json::to_value(f).unwrap()).unwrap()
}

#[tokio::test]
async fn tcp_transport_works() {
    let (_server, addr) = dns_server().await;
    let r = run(DnsOptions {
        transport: DnsTransport::Tcp,
        ..options(addr, "www.example.test", "A")
    })
    .await;
    assert!(r.success, "{:?} {}", r.reason, r.message);
    assert_eq!(answer_data(&r), ["192.0.2.10", "192.0.2.11"]);
    let dns = r.dns.as_ref().unwrap();
    assert_eq!(dns.transport, DnsTransport::Tcp);
    assert!(!dns.truncated_retry);
    assert!(r.phases.connect > Duration::ZERO, "TCP connect is timed");
    assert_eq!(dns.lookup_time, Some(r.phases.processing));
}

#[tokio::test]
async fn nxdomain_fails_by_default_and_passes_when_valid() {
    let (_server, addr) = dns_server().await;
    let r = run(options(addr, "nope.example.test", "A")).await;
    assert!(!r.success);
    assert_eq!(r.reason, Some(Reason::DnsRcode));
    assert!(
        r.message.contains("NXDOMAIN") && r.message.contains("NOERROR"),
        "{}",
        r.message
    );
    let dns = r.dns.as_ref().unwrap();
    assert_eq!(dns.rcode.as_deref(), Some("NXDOMAIN"));
    // The negative answer carries the zone's SOA in the authority section.
    assert!(
        dns.authority.iter().any(|a| a.record_type == "SOA"),
        "{dns:?}"
    );

    let r = run(DnsOptions {
        valid_rcodes: vec!["nxdomain".into()],
        ..options(addr, "nope.example.test", "A")
    })
    .await;
    assert!(r.success, "{:?} {}", r.reason, r.message);
    assert!(
        r.message.starts_with("NXDOMAIN, 0 answers in "),
        "{}",
        r.message
    );
}

#[tokio::test]
async fn answer_assertions_pass_and_fail_with_exact_reasons() {
    let (_server, addr) = dns_server().await;
    let www = || options(addr, "www.example.test", "A");
    let case = |o: DnsOptions| async { run(o).await };

    // Passing assertions.
    let r = case(DnsOptions {
        answer_contains: vec!["192.0.2.10".into(), "192.0.2.11".into()],
        answer_regex: vec![r"^192\.0\.2\.1[01]$".into()],
        answers_all_match: vec![r"^192\.0\.2\.".into()],
        min_answers: 2,
        ..www()
    })
    .await;
    assert!(r.success, "{:?} {}", r.reason, r.message);

    // min_answers is checked before content.
    let r = case(DnsOptions {
        min_answers: 3,
        answer_contains: vec!["nothing like it".into()],
        ..www()
    })
    .await;
    assert_eq!(r.reason, Some(Reason::DnsTooFewAnswers), "{}", r.message);
    assert!(r.message.contains("2 answers, at least 3"), "{}", r.message);

    let r = case(DnsOptions {
        answer_contains: vec!["192.0.2.10".into(), "192.0.2.99".into()],
        ..www()
    })
    .await;
    assert_eq!(r.reason, Some(Reason::DnsAnswerMismatch));
    assert!(r.message.starts_with("answer_contains:"), "{}", r.message);
    assert!(
        r.message.contains("192.0.2.99") && r.message.contains("A 192.0.2.1"),
        "{}",
        r.message
    );

    let r = case(DnsOptions {
        answer_regex: vec![r"^10\.".into()],
        ..www()
    })
    .await;
    assert_eq!(r.reason, Some(Reason::DnsAnswerMismatch));
    assert!(r.message.starts_with("answer_regex:"), "{}", r.message);

    // One answer out of two does not match.
    let r = case(DnsOptions {
        answers_all_match: vec![r"\.10$".into()],
        ..www()
    })
    .await;
    assert_eq!(r.reason, Some(Reason::DnsAnswerMismatch));
    assert!(
        r.message.starts_with("answers_all_match:") && r.message.contains("192.0.2.11"),
        "{}",
        r.message
    );

    // "Every answer matches" does not hold vacuously for an empty answer.
    let r = case(DnsOptions {
        answers_all_match: vec![".".into()],
        ..options(addr, "www.example.test", "MX")
    })
    .await;
    assert_eq!(r.reason, Some(Reason::DnsAnswerMismatch), "{}", r.message);
    assert!(r.message.contains("no answers"), "{}", r.message);

    // The rcode is checked before anything else.
    let r = case(DnsOptions {
        min_answers: 1,
        ..options(addr, "nope.example.test", "A")
    })
    .await;
    assert_eq!(r.reason, Some(Reason::DnsRcode));
}

/// A UDP server that answers each query with `reply(query)`: zero or more
/// raw datagrams. Bound before the task is spawned, so it is ready when
/// this returns.
async fn fake_udp<F>(reply: F) -> SocketAddr
where
    F: Fn(&Message) -> Vec<Vec<u8>> + Send + 'static,
{
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            for datagram in reply(&query) {
                let _ = socket.send_to(&datagram, from).await;
            }
        }
    });
    addr
}

/// A minimal valid response to `query`: same id and question, one A record.
fn answer(query: &Message) -> Message {
    let mut m = Message::response(query.metadata.id, OpCode::Query);
    m.metadata.recursion_desired = query.metadata.recursion_desired;
    m.add_queries(query.queries.iter().cloned());
    m.add_answer(Record::from_rdata(
        query.queries[0].name().clone(),
        60,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
    ));
    m
}

#[tokio::test]
async fn silent_udp_server_times_out_in_processing_within_the_deadline() {
    let addr = fake_udp(|_| vec![]).await;
    let start = std::time::Instant::now();
    let r = run_with(
        options(addr, "www.example.test", "A"),
        Duration::from_millis(300),
    )
    .await;
    let elapsed = start.elapsed();
    // A DNS check's deadline passing while it waits for the answer is a
    // DNS timeout (mod.rs maps processing → dns_timeout for DNS checks);
    // the message still names the phase.
    assert_eq!(r.reason, Some(Reason::DnsTimeout), "{}", r.message);
    assert!(
        r.message.contains(Phase::Processing.as_str()),
        "{}",
        r.message
    );
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    // What was known before the deadline is still reported.
    let dns = r.dns.unwrap();
    assert_eq!(dns.server, addr.to_string());
    assert_eq!(dns.rcode, None);
    assert_eq!(dns.lookup_time, None);
    assert!(
        r.phases.processing >= Duration::from_millis(250),
        "{:?}",
        r.phases
    );
}

#[tokio::test]
async fn garbage_only_is_malformed() {
    // Not even a DNS header: a broken server (or something else entirely)
    // on the port.
    let addr = fake_udp(|_| vec![b"\xde\xad\xbe\xef not dns".to_vec()]).await;
    let start = std::time::Instant::now();
    let r = run(options(addr, "www.example.test", "A")).await;
    assert_eq!(r.reason, Some(Reason::DnsMalformed), "{}", r.message);
    assert!(r.message.contains("unparseable"), "{}", r.message);
    assert_eq!(r.dns.unwrap().ignored_datagrams, 1);
    // Decided after a short grace for a valid answer, not at the deadline.
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn garbage_then_valid_answer_succeeds() {
    let addr = fake_udp(|q| vec![b"\x00garbage".to_vec(), answer(q).to_vec().unwrap()]).await;
    let r = run(options(addr, "www.example.test", "A")).await;
    assert!(r.success, "{:?} {}", r.reason, r.message);
    assert_eq!(r.dns.unwrap().ignored_datagrams, 1);
}

#[tokio::test]
async fn wrong_id_datagram_is_ignored_and_counted() {
    let addr = fake_udp(|q| {
        let mut wrong = answer(q);
        wrong.metadata.id = q.metadata.id.wrapping_add(1);
        wrong.answers[0].data = RData::A(A(Ipv4Addr::new(203, 0, 113, 66)));
        // Right id, wrong question: also not ours.
        let mut other = answer(q);
        other.queries[0].set_name(name("evil.example."));
        vec![
            wrong.to_vec().unwrap(),
            other.to_vec().unwrap(),
            answer(q).to_vec().unwrap(),
        ]
    })
    .await;
    let r = run(options(addr, "www.example.test", "A")).await;
    assert!(r.success, "{:?} {}", r.reason, r.message);
    assert_eq!(
        answer_data(&r),
        ["192.0.2.1"],
        "the spoofed answer was not taken"
    );
    assert_eq!(r.dns.unwrap().ignored_datagrams, 2);
}

#[tokio::test]
async fn only_wrong_ids_is_a_timeout_not_malformed() {
    // Well-formed messages for another query say nothing about the server;
    // we wait for ours until the deadline.
    let addr = fake_udp(|q| {
        let mut wrong = answer(q);
        wrong.metadata.id = q.metadata.id.wrapping_add(1);
        vec![wrong.to_vec().unwrap()]
    })
    .await;
    let r = run_with(
        options(addr, "www.example.test", "A"),
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(r.reason, Some(Reason::DnsTimeout), "{}", r.message);
    assert_eq!(r.dns.unwrap().ignored_datagrams, 1);
}

#[tokio::test]
async fn truncated_udp_answer_is_retried_over_tcp() {
    // UDP: a fake that only ever says "truncated". TCP on the same port: the
    // real server with the zone.
    let (udp, tcp) = bind_pair().await;
    let addr = udp.local_addr().unwrap();
    let mut server = Server::new(catalog());
    server.register_listener(tcp, Duration::from_secs(5), 32);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut tc = answer(&query);
            tc.answers.clear();
            tc.metadata.truncation = true;
            let _ = udp.send_to(&tc.to_vec().unwrap(), from).await;
        }
    });

    let r = run(options(addr, "www.example.test", "A")).await;
    assert!(r.success, "{:?} {}", r.reason, r.message);
    assert_eq!(answer_data(&r), ["192.0.2.10", "192.0.2.11"]);
    let dns = r.dns.as_ref().unwrap();
    assert!(dns.truncated_retry);
    assert_eq!(dns.transport, DnsTransport::Tcp);
    assert!(
        !dns.flags.unwrap().truncated,
        "flags are those of the TCP answer"
    );
    assert!(r.phases.connect > Duration::ZERO);
    assert_eq!(
        dns.lookup_time,
        Some(r.phases.processing),
        "both round trips count"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["dns"]["transport"], "tcp");
    assert_eq!(json["dns"]["truncated_retry"], true);
    drop(server);
}

#[tokio::test]
async fn udp_to_a_closed_port_is_connect_refused() {
    // Take a free port and release it, so nothing listens there.
    let addr = {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.local_addr().unwrap()
    };
    let r = run(options(addr, "www.example.test", "A")).await;
    // Linux answers a datagram to a closed loopback port with an ICMP port
    // unreachable at once, and because the check's socket is connected the
    // kernel hands that to the pending recv as ECONNREFUSED: a refusal, as
    // fast as a TCP RST, rather than a silent wait for the deadline.
    assert_eq!(r.reason, Some(Reason::ConnectRefused), "{}", r.message);
    assert!(r.message.contains("ICMP"), "{}", r.message);
    assert!(r.duration < Duration::from_secs(1), "{:?}", r.duration);
}

#[tokio::test]
async fn tcp_to_a_closed_port_is_connect_refused() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let r = run(DnsOptions {
        transport: DnsTransport::Tcp,
        ..options(addr, "www.example.test", "A")
    })
    .await;
    assert_eq!(r.reason, Some(Reason::ConnectRefused), "{}", r.message);
}

#[tokio::test]
async fn tcp_server_closing_without_answer_is_io_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            drop(s);
        }
    });
    let r = run(DnsOptions {
        transport: DnsTransport::Tcp,
        ..options(addr, "www.example.test", "A")
    })
    .await;
    assert_eq!(r.reason, Some(Reason::IoError), "{}", r.message);
}

#[tokio::test]
async fn server_given_by_name_is_resolved_first() {
    let (_server, addr) = dns_server().await;
    // "localhost" resolves through the hosts file; restrict to IPv4 since
    // the test server only listens on 127.0.0.1.
    let mut o = options(addr, "www.example.test", "A");
    o.server = format!("localhost:{}", addr.port());
    o.net.ip_preference = varde::check::IpPreference::Ip4;
    o.net.ip_fallback = false;
    let r = run(o).await;
    assert!(r.success, "{:?} {}", r.reason, r.message);
    assert_eq!(r.dns.unwrap().server, addr.to_string());
}

#[test]
fn build_errors_name_the_field() {
    let field = |o: DnsOptions| {
        CheckSpec::Dns(o)
            .build(TIMEOUT)
            .expect_err("invalid check built")
            .field
    };
    let ok = || DnsOptions {
        server: "127.0.0.1".into(),
        name: "example.test".into(),
        ..DnsOptions::default()
    };
    assert!(CheckSpec::Dns(ok()).build(TIMEOUT).is_ok());
    assert_eq!(
        field(DnsOptions {
            answer_regex: vec!["(unclosed".into()],
            ..ok()
        }),
        "answer_regex"
    );
    assert_eq!(
        field(DnsOptions {
            query_type: "AXFR".into(),
            ..ok()
        }),
        "query_type"
    );
    for bad in ["", "not a host", "127.0.0.1:99999", "[::1", "host:0"] {
        assert_eq!(
            field(DnsOptions {
                server: bad.into(),
                ..ok()
            }),
            "server",
            "{bad:?}"
        );
    }
    assert_eq!(
        field(DnsOptions {
            name: "bad name".into(),
            ..ok()
        }),
        "name"
    );
    assert_eq!(
        field(DnsOptions {
            valid_rcodes: vec!["OK".into()],
            ..ok()
        }),
        "valid_rcodes"
    );
}

#[test]
fn options_parse_from_a_check_spec() {
    let spec: CheckSpec = serde_json::from_str(
        r#"{"kind":"dns","server":"192.0.2.53","name":"example.test","query_type":"mx",
            "transport":"tcp","valid_rcodes":["NOERROR","NXDOMAIN"],"min_answers":1}"#,
    )
    .unwrap();
    let CheckSpec::Dns(o) = &spec else {
        panic!("not a dns spec")
    };
    assert_eq!(o.transport, DnsTransport::Tcp);
    assert!(o.recursion_desired);
    let check = spec.build(TIMEOUT).unwrap();
    assert_eq!(check.target(), "example.test. MX @192.0.2.53:53");
    assert!(
        serde_json::from_str::<CheckSpec>(r#"{"kind":"dns","server":"x","name":"y","bogus":1}"#)
            .is_err()
    );
}

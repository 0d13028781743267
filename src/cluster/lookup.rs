//! One name resolution as the loop will run it, sans-IO: an address literal or an
//! `/etc/hosts` entry answers at once; otherwise each name `resolv.conf` says to try is asked
//! of each nameserver in turn, A then AAAA, each question given a deadline, until one gives
//! addresses. The loop sends the datagrams [`Lookup::next_query`] hands out, passes back what
//! arrives and calls [`Lookup::tick`] at [`Lookup::deadline`].

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::dns::{self, DnsError, QType, ResolvConf};

/// How long one question may wait for its answer.
pub const QUESTION_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// No nameserver gave addresses for any name tried (the last reason, if one was given).
    NotFound(Option<DnsError>),
    /// A name that cannot be asked for.
    BadName,
}

#[derive(Debug)]
pub struct Lookup {
    /// Every question still to ask, in order: (name, nameserver, type).
    questions: Vec<(String, IpAddr, QType)>,
    next: usize,
    /// The question out, its id and when its answer is due.
    out: Option<(u16, Instant)>,
    id_seed: u16,
    last_error: Option<DnsError>,
    result: Option<Result<Vec<IpAddr>, LookupError>>,
}

impl Lookup {
    /// A lookup of `name` given the texts of `/etc/hosts` and `/etc/resolv.conf` (empty when
    /// absent). `id_seed` varies the query ids (a random value, so answers cannot be guessed).
    pub fn new(name: &str, hosts: &str, resolv_conf: &str, id_seed: u16) -> Lookup {
        let mut lookup = Lookup {
            questions: Vec::new(),
            next: 0,
            out: None,
            id_seed,
            last_error: None,
            result: None,
        };
        let name = name.trim_end_matches('.');
        if let Ok(addr) = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            lookup.result = Some(Ok(vec![addr]));
            return lookup;
        }
        let listed = dns::hosts_lookup(hosts, name);
        if !listed.is_empty() {
            lookup.result = Some(Ok(listed));
            return lookup;
        }
        let conf = ResolvConf::parse(resolv_conf);
        for candidate in conf.candidates(name) {
            for &server in &conf.nameservers {
                for qtype in [QType::A, QType::Aaaa] {
                    lookup.questions.push((candidate.clone(), server, qtype));
                }
            }
        }
        lookup
    }

    /// The answer, once there is one.
    pub fn result(&self) -> Option<&Result<Vec<IpAddr>, LookupError>> {
        self.result.as_ref()
    }

    /// The next datagram to send and where (port 53), when none is out.
    pub fn next_query(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        if self.result.is_some() || self.out.is_some() {
            return None;
        }
        while let Some((name, server, qtype)) = self.questions.get(self.next) {
            let id = self.id_seed.wrapping_add(self.next as u16);
            match dns::query(id, name, *qtype) {
                Ok(bytes) => {
                    self.out = Some((id, now + QUESTION_TIMEOUT));
                    return Some((SocketAddr::new(*server, 53), bytes));
                }
                Err(e) => {
                    self.last_error = Some(e);
                    self.next += 1;
                }
            }
        }
        self.result = Some(Err(if self.last_error == Some(DnsError::BadName) {
            LookupError::BadName
        } else {
            LookupError::NotFound(self.last_error.clone())
        }));
        None
    }

    /// A datagram arrived from `from`. One that is not the answer to the question out (another
    /// id, another server) is ignored.
    pub fn answer(&mut self, from: SocketAddr, bytes: &[u8]) {
        let Some((id, _)) = self.out else { return };
        let Some((_, server, qtype)) = self.questions.get(self.next) else {
            return;
        };
        if from.ip() != *server || from.port() != 53 {
            return;
        }
        match dns::parse_response(bytes, id, *qtype) {
            Err(DnsError::NotOurs) => {}
            Ok(addrs) if !addrs.is_empty() => self.result = Some(Ok(addrs)),
            Ok(_) => self.move_on(None),
            Err(e) => self.move_on(Some(e)),
        }
    }

    /// When the question out is due.
    pub fn deadline(&self) -> Option<Instant> {
        self.out.map(|(_, due)| due)
    }

    /// A question unanswered by its deadline is given up for the next.
    pub fn tick(&mut self, now: Instant) {
        if self.out.is_some_and(|(_, due)| now >= due) {
            self.move_on(None);
        }
    }

    fn move_on(&mut self, error: Option<DnsError>) {
        if error.is_some() {
            self.last_error = error;
        }
        self.out = None;
        self.next += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESOLV: &str = "nameserver 10.0.0.1\nnameserver 10.0.0.2\n";

    /// An answer to `query` holding `addrs` (or the error code `rcode`).
    fn answer_to(query: &[u8], addrs: &[[u8; 4]], rcode: u8) -> Vec<u8> {
        let mut m = query.to_vec();
        m[2] = 0x81;
        m[3] = 0x80 | rcode;
        m[7] = addrs.len() as u8;
        for a in addrs {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            m.extend_from_slice(a);
        }
        m
    }

    fn from(server: &str) -> SocketAddr {
        SocketAddr::new(server.parse().unwrap(), 53)
    }

    #[test]
    fn literals_and_hosts_entries_need_no_question() {
        for (name, hosts) in [
            ("10.1.2.3", ""),
            ("[::1]", ""),
            ("redis", "172.18.0.2 redis\n"),
        ] {
            let l = Lookup::new(name, hosts, RESOLV, 1);
            assert!(matches!(l.result(), Some(Ok(a)) if a.len() == 1), "{name}");
        }
    }

    #[test]
    fn nameservers_are_asked_in_turn_until_one_answers() {
        let now = Instant::now();
        let mut l = Lookup::new("redis", "", RESOLV, 100);
        let (to, q) = l.next_query(now).unwrap();
        assert_eq!(to, from("10.0.0.1"));
        assert!(l.next_query(now).is_none(), "one question at a time");
        // A forged answer (wrong id) and one from elsewhere change nothing.
        let mut forged = answer_to(&q, &[[6, 6, 6, 6]], 0);
        forged[1] ^= 1;
        l.answer(from("10.0.0.1"), &forged);
        l.answer(from("10.9.9.9"), &answer_to(&q, &[[6, 6, 6, 6]], 0));
        assert!(l.result().is_none());
        // No A record: AAAA of the same server next; it does not answer in time.
        l.answer(from("10.0.0.1"), &answer_to(&q, &[], 0));
        let (_, q) = l.next_query(now).unwrap();
        l.tick(now + QUESTION_TIMEOUT);
        // The second server knows.
        let (to, q2) = l.next_query(now).unwrap();
        assert_eq!(to, from("10.0.0.2"));
        assert_ne!(q, q2);
        l.answer(from("10.0.0.2"), &answer_to(&q2, &[[172, 18, 0, 5]], 0));
        assert_eq!(l.result(), Some(&Ok(vec!["172.18.0.5".parse().unwrap()])));
    }

    #[test]
    fn when_nobody_knows_the_last_reason_is_given() {
        let now = Instant::now();
        let mut l = Lookup::new("nowhere", "", "nameserver 10.0.0.1\n", 7);
        for _ in 0..2 {
            let (to, q) = l.next_query(now).unwrap();
            l.answer(to, &answer_to(&q, &[], 3));
        }
        assert!(l.next_query(now).is_none());
        assert_eq!(
            l.result(),
            Some(&Err(LookupError::NotFound(Some(DnsError::Rcode(3)))))
        );
        let mut bad = Lookup::new("a..b", "", "", 7);
        assert!(bad.next_query(now).is_none());
        assert_eq!(bad.result(), Some(&Err(LookupError::BadName)));
    }
}

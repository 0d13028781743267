//! Finding Redis by name without the C library's resolver, sans-IO. The release binary is linked
//! statically against glibc, whose `getaddrinfo` needs NSS modules that an empty (`scratch`)
//! image does not have; so the server reads `/etc/hosts` and `/etc/resolv.conf` itself (as
//! Docker writes them) and asks the nameservers over UDP with the messages built and read here
//! (RFC 1035: one question, A or AAAA, answers followed through name compression).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The addresses `/etc/hosts` gives `name` (case-insensitive, aliases included).
pub fn hosts_lookup(hosts: &str, name: &str) -> Vec<IpAddr> {
    hosts
        .lines()
        .filter_map(|line| {
            let line = line.split('#').next()?;
            let mut fields = line.split_whitespace();
            let addr: IpAddr = fields.next()?.parse().ok()?;
            fields.any(|n| n.eq_ignore_ascii_case(name)).then_some(addr)
        })
        .collect()
}

/// What `/etc/resolv.conf` says: nameservers, search domains and `ndots`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub ndots: usize,
}

impl ResolvConf {
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf {
            nameservers: Vec::new(),
            search: Vec::new(),
            ndots: 1,
        };
        for line in text.lines() {
            let mut fields = line.split_whitespace();
            match fields.next() {
                Some("nameserver") => {
                    if let Some(addr) = fields.next().and_then(|a| a.parse().ok()) {
                        conf.nameservers.push(addr);
                    }
                }
                Some("search") | Some("domain") => {
                    conf.search = fields
                        .map(|d| d.trim_end_matches('.').to_string())
                        .collect();
                }
                Some("options") => {
                    for opt in fields {
                        if let Some(n) = opt.strip_prefix("ndots:").and_then(|n| n.parse().ok()) {
                            conf.ndots = usize::min(n, 15);
                        }
                    }
                }
                _ => {}
            }
        }
        if conf.nameservers.is_empty() {
            // What the C library assumes with no nameserver line.
            conf.nameservers.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        conf
    }

    /// The names to ask for, in order: with the search domains first when `name` has fewer
    /// dots than `ndots` (a Docker service name has none), and as given.
    pub fn candidates(&self, name: &str) -> Vec<String> {
        let name = name.trim_end_matches('.');
        let dots = name.matches('.').count();
        let searched = self.search.iter().map(|d| format!("{name}.{d}"));
        if dots >= self.ndots {
            std::iter::once(name.to_string()).chain(searched).collect()
        } else {
            searched.chain(std::iter::once(name.to_string())).collect()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QType {
    A = 1,
    Aaaa = 28,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// A name that cannot be asked for (an empty label, one over 63 bytes, over 253 in all).
    BadName,
    /// Not an answer to our question: another id, not a response, or another question.
    NotOurs,
    /// The answer is shorter than it says, or its names loop.
    Malformed,
    /// The server answered with this error code (3: no such name).
    Rcode(u8),
    /// Cut short: the question must be asked again over TCP.
    Truncated,
}

/// A query for `name` with recursion desired.
pub fn query(id: u16, name: &str, qtype: QType) -> Result<Vec<u8>, DnsError> {
    let name = name.trim_end_matches('.');
    if name.is_empty() || name.len() > 253 {
        return Err(DnsError::BadName);
    }
    let mut out = Vec::with_capacity(18 + name.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(DnsError::BadName);
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&(qtype as u16).to_be_bytes());
    out.extend_from_slice(&[0, 1]);
    Ok(out)
}

/// The addresses of type `qtype` in the answer to query `id` (empty: the name exists but has
/// none of that type).
pub fn parse_response(msg: &[u8], id: u16, qtype: QType) -> Result<Vec<IpAddr>, DnsError> {
    let header = msg.get(..12).ok_or(DnsError::Malformed)?;
    let u16_at = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    if u16_at(0) != id || header[2] & 0x80 == 0 || u16_at(4) != 1 {
        return Err(DnsError::NotOurs);
    }
    if header[2] & 0x02 != 0 {
        return Err(DnsError::Truncated);
    }
    let rcode = header[3] & 0x0f;
    if rcode != 0 {
        return Err(DnsError::Rcode(rcode));
    }
    let answers = u16_at(6);
    let mut pos = skip_name(msg, 12)? + 4;
    let mut addrs = Vec::new();
    for _ in 0..answers {
        pos = skip_name(msg, pos)?;
        let rr = msg.get(pos..pos + 10).ok_or(DnsError::Malformed)?;
        let (rtype, class) = (
            u16::from_be_bytes([rr[0], rr[1]]),
            u16::from_be_bytes([rr[2], rr[3]]),
        );
        let len = usize::from(u16::from_be_bytes([rr[8], rr[9]]));
        let data = msg
            .get(pos + 10..pos + 10 + len)
            .ok_or(DnsError::Malformed)?;
        // CNAMEs come first and their targets' records after: only addresses are taken.
        if class == 1 && rtype == qtype as u16 {
            // An A record holds 4 bytes and an AAAA record 16, or the answer is not to be trusted.
            match (qtype, data.len()) {
                (QType::A, 4) => addrs.push(IpAddr::V4(Ipv4Addr::new(
                    data[0], data[1], data[2], data[3],
                ))),
                (QType::Aaaa, 16) => {
                    let b: [u8; 16] = data.try_into().map_err(|_| DnsError::Malformed)?;
                    addrs.push(IpAddr::V6(Ipv6Addr::from(b)));
                }
                _ => return Err(DnsError::Malformed),
            }
        }
        pos += 10 + len;
    }
    Ok(addrs)
}

/// Where the name at `pos` ends (after its terminating zero, or after its compression pointer).
fn skip_name(msg: &[u8], mut pos: usize) -> Result<usize, DnsError> {
    // A name is at most 255 bytes, so more than 128 labels means it loops or lies.
    for _ in 0..128 {
        let len = *msg.get(pos).ok_or(DnsError::Malformed)?;
        match len {
            0 => return Ok(pos + 1),
            l if l & 0xc0 == 0xc0 => {
                msg.get(pos + 1).ok_or(DnsError::Malformed)?;
                return Ok(pos + 2);
            }
            l if l & 0xc0 == 0 => pos += 1 + usize::from(l),
            _ => return Err(DnsError::Malformed),
        }
    }
    Err(DnsError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_as_docker_writes_them() {
        let hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n# comment 10.0.0.9 redis\n172.18.0.2\tredis pubsub-redis-1 # the service\n";
        assert_eq!(
            hosts_lookup(hosts, "REDIS"),
            ["172.18.0.2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(hosts_lookup(hosts, "pubsub-redis-1").len(), 1);
        assert_eq!(hosts_lookup(hosts, "localhost").len(), 2);
        assert!(hosts_lookup(hosts, "comment").is_empty());
    }

    #[test]
    fn resolv_conf_and_the_names_to_try() {
        let c = ResolvConf::parse("nameserver 127.0.0.11\nsearch svc.cluster.local cluster.local\noptions ndots:5 attempts:2\n");
        assert_eq!(c.nameservers, ["127.0.0.11".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.ndots, 5);
        assert_eq!(
            c.candidates("redis"),
            ["redis.svc.cluster.local", "redis.cluster.local", "redis"]
        );
        let c = ResolvConf::parse("# nothing\n");
        assert_eq!(c.nameservers, [IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        assert_eq!(c.candidates("redis.example.com."), ["redis.example.com"]);
    }

    #[test]
    fn a_query_is_rfc_1035_and_bad_names_are_refused() {
        let q = query(0xbeef, "redis.local", QType::A).unwrap();
        assert_eq!(
            q,
            b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05redis\x05local\x00\x00\x01\x00\x01"
        );
        for bad in ["", "a..b", &"x".repeat(64), &"a.".repeat(128)] {
            assert_eq!(query(1, bad, QType::A), Err(DnsError::BadName), "{bad}");
        }
    }

    /// An answer to `query(7, "redis", qtype)` with a CNAME and then `addrs`.
    fn response(qtype: QType, addrs: &[&[u8]], flags: [u8; 2]) -> Vec<u8> {
        let mut m = query(7, "redis", qtype).unwrap();
        m[2] = flags[0];
        m[3] = flags[1];
        m[7] = 1 + addrs.len() as u8;
        // CNAME redis -> r.x (name by pointer to the question's at 12).
        m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 5, 1, b'r', 1, b'x', 0]);
        for a in addrs {
            m.extend_from_slice(&[
                0xc0,
                29,
                0,
                qtype as u8,
                0,
                1,
                0,
                0,
                0,
                60,
                0,
                a.len() as u8,
            ]);
            m.extend_from_slice(a);
        }
        m
    }

    #[test]
    fn answers_give_their_addresses_through_cnames_and_errors_say_what_they_are() {
        let ok = [0x81, 0x80];
        let r = response(QType::A, &[&[172, 18, 0, 2], &[172, 18, 0, 3]], ok);
        assert_eq!(
            parse_response(&r, 7, QType::A).unwrap(),
            [
                "172.18.0.2".parse::<IpAddr>().unwrap(),
                "172.18.0.3".parse().unwrap()
            ]
        );
        let six = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let r = response(QType::Aaaa, &[&six], ok);
        assert_eq!(
            parse_response(&r, 7, QType::Aaaa).unwrap(),
            ["::1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(parse_response(&r, 8, QType::Aaaa), Err(DnsError::NotOurs));
        let nx = response(QType::A, &[], [0x81, 0x83]);
        assert_eq!(parse_response(&nx, 7, QType::A), Err(DnsError::Rcode(3)));
        let tc = response(QType::A, &[], [0x83, 0x80]);
        assert_eq!(parse_response(&tc, 7, QType::A), Err(DnsError::Truncated));
        // An A record of 16 bytes is not an IPv4 address (the fuzzer's find).
        let wrong = response(QType::A, &[&six], ok);
        assert_eq!(
            parse_response(&wrong, 7, QType::A),
            Err(DnsError::Malformed)
        );
        let r = response(QType::A, &[&[1, 2, 3, 4]], ok);
        for cut in 0..r.len() {
            assert!(
                parse_response(&r[..cut], 7, QType::A).is_err(),
                "cut at {cut}"
            );
        }
        // A name whose labels never end.
        let mut looped = query(7, "redis", QType::A).unwrap();
        looped[2] = 0x81;
        looped[7] = 1;
        looped.extend(std::iter::repeat_n(1u8, 600));
        assert_eq!(
            parse_response(&looped, 7, QType::A),
            Err(DnsError::Malformed)
        );
    }
}

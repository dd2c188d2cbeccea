//! Which network addresses Herald may connect to (the SSRF policy, DESIGN §10).
//!
//! By default every address that is not publicly routable is refused: loopback, private,
//! link-local, CGNAT, unique-local, multicast, unspecified, reserved and documentation
//! ranges, and every IPv4-mapped or -compatible IPv6 form. Operators exempt networks with
//! `HERALD_ALLOW_NETWORKS` (CIDRs); nothing else lifts the block.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP network such as `127.0.0.0/8` or `::1/128`. A bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix must be 0–{max}"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u32::from(net) as u128,
                u32::from(ip) as u128,
                self.prefix,
                32,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8, bits: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = bits - prefix;
    (a >> shift) == (b >> shift)
}

/// The connect policy: the built-in blocklist minus the operator's exemptions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetPolicy {
    allow: Vec<Cidr>,
}

impl NetPolicy {
    /// The default policy (no exemptions).
    pub fn strict() -> Self {
        Self::default()
    }

    /// Parses a comma- or space-separated list of CIDRs, as in `HERALD_ALLOW_NETWORKS`.
    pub fn with_allowed(list: &str) -> Result<Self, String> {
        let allow = list
            .split([',', ' '])
            .filter(|s| !s.trim().is_empty())
            .map(Cidr::from_str)
            .collect::<Result<_, _>>()?;
        Ok(NetPolicy { allow })
    }

    /// `Err(reason)` when Herald must not connect to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), &'static str> {
        if self.allow.iter().any(|n| n.contains(ip)) {
            return Ok(());
        }
        match blocked_reason(ip) {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
}

/// Why an address is not publicly routable, or `None` when it is.
pub fn blocked_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    let reason = if ip.is_unspecified() || o[0] == 0 {
        "unspecified address"
    } else if ip.is_loopback() {
        "loopback address"
    } else if ip.is_private() {
        "private address"
    } else if ip.is_link_local() {
        "link-local address"
    } else if o[0] == 100 && (64..128).contains(&o[1]) {
        "shared (CGNAT) address"
    } else if ip.is_multicast() {
        "multicast address"
    } else if ip.is_broadcast() || o[0] >= 240 {
        "reserved address"
    } else if ip.is_documentation()
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
    {
        "special-purpose address"
    } else {
        return None;
    };
    Some(reason)
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    let reason = if ip.is_unspecified() {
        "unspecified address"
    } else if ip.is_loopback() {
        "loopback address"
    } else if ip.to_ipv4_mapped().is_some() || (seg[..6] == [0; 6]) {
        "IPv4-mapped or -compatible address"
    } else if seg[..4] == [0; 4] && seg[4] == 0xffff && seg[5] == 0 {
        // ::ffff:0:a.b.c.d (RFC 2765): another spelling of an IPv4 address.
        "IPv4-translated address"
    } else if (seg[0] & 0xfe00) == 0xfc00 {
        "unique-local address"
    } else if (seg[0] & 0xffc0) == 0xfe80 || (seg[0] & 0xffc0) == 0xfec0 {
        "link-local address"
    } else if ip.is_multicast() {
        "multicast address"
    } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        "documentation address"
    } else if seg[0] == 0x0064 && seg[1] == 0xff9b {
        // 64:ff9b::/96 and the local-use 64:ff9b:1::/48: each embeds an IPv4 address.
        "NAT64 address"
    } else if seg[0] == 0x2002 {
        // 6to4 embeds an IPv4 address in bits 16..48.
        "6to4 address"
    } else if seg[0] == 0x2001 && seg[1] == 0 {
        // Teredo embeds its server's IPv4 address and (inverted) the client's.
        "Teredo address"
    } else if seg[..4] == [0x0100, 0, 0, 0] {
        "discard-only address"
    } else if seg[0] == 0x2001 && ((seg[1] & 0xfff0) == 0x0010 || (seg[1] & 0xfff0) == 0x0020) {
        "ORCHID address"
    } else if (seg[0] & 0xfff0) == 0x3ff0 {
        "documentation address"
    } else {
        return None;
    };
    Some(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    // These literals are only classified here, never connected to.
    #[test]
    fn default_policy_blocks_non_public_ranges() {
        let p = NetPolicy::strict();
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
        ] {
            assert!(p.check(ip(s)).is_err(), "{s} should be blocked");
        }
        for s in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(p.check(ip(s)).is_ok(), "{s} should be allowed");
        }
    }

    /// Every IPv6 spelling that embeds an IPv4 address (translation and tunnel prefixes)
    /// is blocked by default, whatever the IPv4 address inside: a check of the outer
    /// address alone would otherwise let `127.0.0.1` or `169.254.169.254` through.
    #[test]
    fn ipv6_prefixes_that_embed_ipv4_are_blocked_whatever_they_embed() {
        let p = NetPolicy::strict();
        for s in [
            "::ffff:0:7f00:1",                      // IPv4-translated 127.0.0.1
            "::ffff:0:a9fe:a9fe",                   // IPv4-translated 169.254.169.254
            "::ffff:0:808:808",                     // IPv4-translated 8.8.8.8: still a translation
            "64:ff9b::7f00:1",                      // NAT64 127.0.0.1
            "64:ff9b::808:808",                     // NAT64 8.8.8.8
            "64:ff9b:1::a00:1",                     // local-use NAT64 10.0.0.1
            "64:ff9b:1:ffff::1",                    // anywhere in 64:ff9b:1::/48
            "2002:7f00:1::1",                       // 6to4 127.0.0.1
            "2002:a9fe:a9fe::",                     // 6to4 169.254.169.254
            "2002:808:808::1",                      // 6to4 8.8.8.8
            "2001:0:4136:e378:8000:63bf:3fff:fdd2", // Teredo
            "2001:0:7f00:1::1",                     // Teredo with server 127.0.0.1
            "100::1",                               // discard-only
            "2001:10::1",                           // ORCHID
            "2001:20::1",                           // ORCHIDv2
            "3fff::1",                              // documentation (RFC 9637)
        ] {
            assert!(p.check(ip(s)).is_err(), "{s} should be blocked");
        }
        for s in [
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450:4001::1",
        ] {
            assert!(p.check(ip(s)).is_ok(), "{s} is public");
        }
        // An IPv4 exemption does not extend to IPv6 spellings of the same address.
        let lo = NetPolicy::with_allowed("127.0.0.0/8").unwrap();
        for s in [
            "::ffff:127.0.0.1",
            "::ffff:0:7f00:1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::1",
        ] {
            assert!(lo.check(ip(s)).is_err(), "{s} stays blocked");
        }
    }

    #[test]
    fn exemptions() {
        let p = NetPolicy::with_allowed("127.0.0.0/8, ::1").unwrap();
        assert!(p.check(ip("127.0.0.1")).is_ok());
        assert!(p.check(ip("127.9.9.9")).is_ok());
        assert!(p.check(ip("::1")).is_ok());
        assert!(p.check(ip("10.0.0.1")).is_err());
        assert!(NetPolicy::with_allowed("127.0.0.0/33").is_err());
        assert!(NetPolicy::with_allowed("nonsense").is_err());
    }

    #[test]
    fn cidr_edges() {
        let c: Cidr = "100.64.0.0/10".parse().unwrap();
        assert!(c.contains(ip("100.127.255.255")));
        assert!(!c.contains(ip("100.128.0.0")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("1.2.3.4")));
        assert!(!all.contains(ip("::1")));
    }
}

//! `ip("…")` in line and label filters: one address, a range `a-b`, or a
//! CIDR prefix, IPv4 or IPv6.

use std::net::IpAddr;

/// The addresses an `ip("…")` names, as an inclusive range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpMatcher {
    low: IpAddr,
    high: IpAddr,
}

/// Why an `ip("…")` argument is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("ip({0:?}) is not an address, a range like 10.0.0.1-10.0.0.9 or a CIDR like 10.0.0.0/8")]
pub struct IpError(pub String);

fn bits(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(v4) => (false, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (true, u128::from(v6)),
    }
}

impl IpMatcher {
    /// Parses the argument of `ip(…)`.
    pub fn new(text: &str) -> Result<Self, IpError> {
        let error = || IpError(text.to_owned());
        let text = text.trim();
        if let Some((low, high)) = text.split_once('-') {
            let low: IpAddr = low.trim().parse().map_err(|_| error())?;
            let high: IpAddr = high.trim().parse().map_err(|_| error())?;
            let (l6, l) = bits(low);
            let (h6, h) = bits(high);
            if l6 != h6 || l > h {
                return Err(error());
            }
            return Ok(Self { low, high });
        }
        if let Some((base, prefix)) = text.split_once('/') {
            let base: IpAddr = base.trim().parse().map_err(|_| error())?;
            let prefix: u32 = prefix.trim().parse().map_err(|_| error())?;
            let (v6, value) = bits(base);
            let width = if v6 { 128 } else { 32 };
            if prefix > width {
                return Err(error());
            }
            let host_bits = width - prefix;
            let mask: u128 = if host_bits == 128 {
                u128::MAX
            } else {
                (1u128 << host_bits) - 1
            };
            let (low, high) = (value & !mask, value | mask);
            let make = |v: u128| -> IpAddr {
                if v6 {
                    IpAddr::V6(v.into())
                } else {
                    IpAddr::V4((v as u32).into())
                }
            };
            return Ok(Self {
                low: make(low),
                high: make(high),
            });
        }
        let ip: IpAddr = text.parse().map_err(|_| error())?;
        Ok(Self { low: ip, high: ip })
    }

    /// Whether the address is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (v6, value) = bits(ip);
        let (l6, low) = bits(self.low);
        let (_, high) = bits(self.high);
        v6 == l6 && low <= value && value <= high
    }

    /// Whether `text` holds an address in the range anywhere (a line
    /// filter) — each run of address characters is tried.
    pub fn found_in(&self, text: &[u8]) -> bool {
        let is_ip_char = |b: u8| b.is_ascii_hexdigit() || b == b'.' || b == b':';
        let mut i = 0;
        while i < text.len() {
            if !is_ip_char(text[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < text.len() && is_ip_char(text[i]) {
                i += 1;
            }
            let token = std::str::from_utf8(&text[start..i]).unwrap_or("");
            // `host:port` and sentence punctuation around an address.
            let candidates = [
                token,
                token.trim_end_matches(['.', ':']),
                token.rsplit_once(':').map_or("", |(h, _)| h),
            ];
            if candidates
                .iter()
                .filter_map(|c| c.parse::<IpAddr>().ok())
                .any(|ip| self.contains(ip))
            {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_range_and_cidr() {
        let one = IpMatcher::new("192.168.0.1").unwrap();
        assert!(one.found_in(b"from 192.168.0.1:8080 ok"));
        assert!(!one.found_in(b"from 192.168.0.11 ok"));
        let range = IpMatcher::new("192.168.0.1-192.168.0.10").unwrap();
        assert!(range.found_in(b"addr=192.168.0.5."));
        assert!(!range.found_in(b"addr=192.168.0.50"));
        let cidr = IpMatcher::new("10.0.0.0/8").unwrap();
        assert!(cidr.contains("10.255.1.2".parse().unwrap()));
        assert!(!cidr.contains("11.0.0.1".parse().unwrap()));
        let v6 = IpMatcher::new("2001:db8::/32").unwrap();
        assert!(v6.found_in(b"client 2001:db8::1 connected"));
        assert!(!v6.found_in(b"client 10.0.0.1 connected"));
        for bad in ["", "300.1.1.1", "10.0.0.0/40", "10.0.0.9-10.0.0.1", "a-b"] {
            assert!(IpMatcher::new(bad).is_err(), "{bad}");
        }
    }
}

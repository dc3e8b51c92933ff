//! Values the command lines take (the `softrdma` daemon protocol, `softrdma
//! pingpong`, `softrdma-perf`'s perftest mode): one parser each, one message.

use std::net::IpAddr;

/// `ADDR/PREFIX`, IPv4 or IPv6, with the prefix length bounded by the family.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (a, p) = s.split_once('/').ok_or_else(|| format!("address {s} needs a /prefix"))?;
    let ip: IpAddr = a.parse().map_err(|_| format!("bad address {a}"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let p: u8 = p.parse().ok().filter(|p| *p <= max).ok_or_else(|| format!("bad prefix length {p}"))?;
    Ok((ip, p))
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let v: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16))
        .collect::<Result<_, _>>()
        .map_err(|_| format!("bad MAC {s}"))?;
    v.try_into().map_err(|_| format!("bad MAC {s}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_macs() {
        assert_eq!(parse_cidr("10.0.0.1/24").unwrap(), ("10.0.0.1".parse().unwrap(), 24));
        assert_eq!(parse_cidr("fd77::1/64").unwrap().1, 64);
        for bad in ["10.0.0.1", "10.0.0.1/33", "fd77::1/129", "x/8", "10.0.0.1/x"] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_mac("02:53:52:44:77:21").unwrap(), [2, 0x53, 0x52, 0x44, 0x77, 0x21]);
        for bad in ["02:53:52:44:77", "02:53:52:44:77:21:00", "zz:53:52:44:77:21"] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }
}

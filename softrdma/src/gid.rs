//! A port's GID table, built the way rxe builds it from its netdev's
//! addresses: index 0 is the IPv6 link-local address derived from the MAC
//! (EUI-64), then one RoCEv2 GID per address — IPv4 addresses as
//! IPv4-mapped IPv6 (`::ffff:a.b.c.d`), IPv6 addresses as themselves.
//! Checked against the kernel-rxe guests' `ibv_devinfo -v` output
//! (vectors/kernel-rxe/*.log).

use std::net::{IpAddr, Ipv6Addr};

use verbs_api::{Gid, GidEntry};

pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    let m = mac;
    Ipv6Addr::from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]])
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GidTable {
    gids: Vec<Gid>,
}

impl GidTable {
    pub fn new(mac: [u8; 6], addrs: &[IpAddr]) -> Self {
        let mut gids = vec![Gid::from_ipv6(link_local(mac))];
        for a in addrs {
            let g = match a {
                IpAddr::V4(v4) => Gid::from_ipv4(*v4),
                IpAddr::V6(v6) => Gid::from_ipv6(*v6),
            };
            if !gids.contains(&g) {
                gids.push(g);
            }
        }
        GidTable { gids }
    }

    /// Partition mode: the link-local GID, then exactly the granted GIDs.
    pub fn granted(mac: [u8; 6], gids: &[Gid]) -> Self {
        let mut t = GidTable::new(mac, &[]);
        for g in gids {
            if !t.gids.contains(g) {
                t.gids.push(*g);
            }
        }
        t
    }

    pub fn all(&self) -> Vec<Gid> {
        self.gids.clone()
    }

    pub fn get(&self, index: u32) -> Option<Gid> {
        self.gids.get(index as usize).copied()
    }

    pub fn index_of(&self, gid: &Gid) -> Option<u32> {
        self.gids.iter().position(|g| g == gid).map(|i| i as u32)
    }

    pub fn contains(&self, gid: &Gid) -> bool {
        self.gids.contains(gid)
    }

    pub fn entries(&self) -> Vec<GidEntry> {
        self.gids.iter().enumerate().map(|(i, g)| GidEntry { index: i as u32, gid: *g, roce_v2: true }).collect()
    }

    pub fn len(&self) -> usize {
        self.gids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.gids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_table_as_the_rxe_guest() {
        // rc-pingpong.log, guest B: MAC 52:54:00:77:00:12.
        let t = GidTable::new(
            [0x52, 0x54, 0, 0x77, 0, 0x12],
            &["10.77.0.12".parse().unwrap(), "fd77::12".parse().unwrap()],
        );
        let shown: Vec<String> = t.entries().iter().map(|e| e.gid.to_string()).collect();
        assert_eq!(shown, ["fe80::5054:ff:fe77:12", "::ffff:10.77.0.12", "fd77::12"]);
    }
}

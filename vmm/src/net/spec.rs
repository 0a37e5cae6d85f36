//! What a person writes to give a VM a network: the mode (`user`, `tap:NAME`, `none`), the
//! card's MAC address and port forwards. Parsed here once for vmdesk-vmm's options and the
//! app's definitions, so both accept and print the same forms.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How a VM reaches the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum NetMode {
    /// No network card.
    None,
    /// User-mode NAT through a passt process of the VM's own: no root, no host setup.
    User,
    /// An existing TAP device the user may open (`ip tuntap add NAME mode tap user $USER`).
    Tap(String),
}

/// The most a TAP device's name may be (IFNAMSIZ less its NUL).
const IFNAME_MAX: usize = 15;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("unknown network mode '{0}': use user (NAT, the default), tap:NAME or none")]
    Mode(String),
    #[error(
        "'{0}' is not a network interface name (1 to 15 characters, no '/', ':' or whitespace)"
    )]
    TapName(String),
    #[error("'{0}' is not a MAC address: write six hex pairs, e.g. 52:54:00:12:34:56")]
    Mac(String),
    #[error("'{0}' is a multicast MAC address (its first byte is odd): a card needs a unicast one")]
    MulticastMac(String),
    #[error(
        "'{spec}' is not a port forward: {why}. Write PROTO:[HOSTADDR]:HOSTPORT-:GUESTPORT, e.g. tcp:127.0.0.1:2222-:22 or tcp::8080-:80"
    )]
    Forward { spec: String, why: &'static str },
}

impl FromStr for NetMode {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<NetMode, SpecError> {
        match s {
            "none" => Ok(NetMode::None),
            "user" | "nat" => Ok(NetMode::User),
            _ => match s.strip_prefix("tap:") {
                Some(name) if valid_ifname(name) => Ok(NetMode::Tap(name.to_string())),
                Some(name) => Err(SpecError::TapName(name.to_string())),
                None => Err(SpecError::Mode(s.to_string())),
            },
        }
    }
}

fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

impl fmt::Display for NetMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetMode::None => f.write_str("none"),
            NetMode::User => f.write_str("user"),
            NetMode::Tap(name) => write!(f, "tap:{name}"),
        }
    }
}

impl From<NetMode> for String {
    fn from(m: NetMode) -> String {
        m.to_string()
    }
}

impl TryFrom<String> for NetMode {
    type Error = SpecError;
    fn try_from(s: String) -> Result<NetMode, SpecError> {
        s.parse()
    }
}

/// A network card's Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// QEMU's default address, the one vmdesk-vmm uses when it is given none.
    pub const DEFAULT: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

    /// A locally administered address in QEMU/KVM's 52:54:00 block whose last three bytes
    /// come from `seed` (e.g. random bytes at VM creation), as libvirt picks them.
    pub fn from_seed(seed: [u8; 3]) -> MacAddr {
        MacAddr([0x52, 0x54, 0x00, seed[0], seed[1], seed[2]])
    }
}

impl FromStr for MacAddr {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<MacAddr, SpecError> {
        let bad = || SpecError::Mac(s.to_string());
        let mut mac = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in &mut mac {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        if mac[0] & 1 != 0 {
            return Err(SpecError::MulticastMac(s.to_string()));
        }
        Ok(MacAddr(mac))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        m.to_string()
    }
}

impl TryFrom<String> for MacAddr {
    type Error = SpecError;
    fn try_from(s: String) -> Result<MacAddr, SpecError> {
        s.parse()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A host port forwarded to the guest, in QEMU's `hostfwd` form:
/// `PROTO:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT`. The host address defaults to the
/// loopback (only this machine may connect) unless one is given; the guest address must be
/// left empty, as passt forwards to whatever address it gave the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Forward {
    pub protocol: Protocol,
    pub host_addr: Ipv4Addr,
    pub host_port: u16,
    pub guest_port: u16,
}

impl FromStr for Forward {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Forward, SpecError> {
        let bad = |why| SpecError::Forward {
            spec: s.to_string(),
            why,
        };
        let (proto, rest) = s.split_once(':').ok_or_else(|| bad("it has no protocol"))?;
        let protocol = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => return Err(bad("the protocol must be tcp or udp")),
        };
        let (host, guest) = rest
            .split_once('-')
            .ok_or_else(|| bad("the host and guest sides must be joined by '-'"))?;
        let (host_addr, host_port) = host
            .rsplit_once(':')
            .ok_or_else(|| bad("the host side must be [ADDR]:PORT"))?;
        let host_addr = if host_addr.is_empty() {
            Ipv4Addr::LOCALHOST
        } else {
            host_addr
                .parse()
                .map_err(|_| bad("the host address is not an IPv4 address"))?
        };
        let guest_port = match guest.rsplit_once(':') {
            Some(("", port)) => port,
            Some(_) => {
                return Err(bad(
                    "the guest address must be left out (the guest's own address is used)",
                ));
            }
            None => guest,
        };
        let port = |p: &str, which| match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(bad(which)),
            Ok(n) => Ok(n),
        };
        Ok(Forward {
            protocol,
            host_addr,
            host_port: port(host_port, "the host port must be a number from 1 to 65535")?,
            guest_port: port(
                guest_port,
                "the guest port must be a number from 1 to 65535",
            )?,
        })
    }
}

impl fmt::Display for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}-:{}",
            self.protocol, self.host_addr, self.host_port, self.guest_port
        )
    }
}

impl From<Forward> for String {
    fn from(fwd: Forward) -> String {
        fwd.to_string()
    }
}

impl TryFrom<String> for Forward {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Forward, SpecError> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print_back() {
        for s in ["none", "user", "tap:vmtap0"] {
            assert_eq!(s.parse::<NetMode>().unwrap().to_string(), s);
        }
        assert_eq!("nat".parse::<NetMode>(), Ok(NetMode::User));
        assert!(matches!(
            "bridge".parse::<NetMode>(),
            Err(SpecError::Mode(_))
        ));
        for bad in ["tap:", "tap:a/b", "tap:sixteen-chars-xy", "tap:a b"] {
            assert!(
                matches!(bad.parse::<NetMode>(), Err(SpecError::TapName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn mac_addresses_parse_and_print_back() {
        let m: MacAddr = "52:54:00:AB:cd:0f".parse().unwrap();
        assert_eq!(m.0, [0x52, 0x54, 0x00, 0xab, 0xcd, 0x0f]);
        assert_eq!(m.to_string(), "52:54:00:ab:cd:0f");
        assert_eq!("52-54-00-ab-cd-0f".parse::<MacAddr>(), Ok(m));
        for bad in [
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:11",
            "52:54:00:ab:cd:g0",
            "5:54:00:ab:cd:0f",
        ] {
            assert!(
                matches!(bad.parse::<MacAddr>(), Err(SpecError::Mac(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            "01:00:5e:00:00:01".parse::<MacAddr>(),
            Err(SpecError::MulticastMac(_))
        ));
        assert_eq!(
            MacAddr::from_seed([1, 2, 3]).to_string(),
            "52:54:00:01:02:03"
        );
    }

    #[test]
    fn forwards_take_qemus_hostfwd_form() {
        let f: Forward = "tcp:127.0.0.1:2222-:22".parse().unwrap();
        assert_eq!(
            f,
            Forward {
                protocol: Protocol::Tcp,
                host_addr: Ipv4Addr::LOCALHOST,
                host_port: 2222,
                guest_port: 22
            }
        );
        assert_eq!(f.to_string(), "tcp:127.0.0.1:2222-:22");
        // The host address defaults to the loopback; the guest side's ':' is optional.
        assert_eq!("tcp::2222-:22".parse::<Forward>(), Ok(f));
        assert_eq!("tcp::2222-22".parse::<Forward>(), Ok(f));
        let u: Forward = "udp:0.0.0.0:5353-:53".parse().unwrap();
        assert_eq!(
            (u.protocol, u.host_addr),
            (Protocol::Udp, Ipv4Addr::UNSPECIFIED)
        );
        assert_eq!(u.to_string().parse::<Forward>(), Ok(u));
    }

    #[test]
    fn bad_forwards_say_what_is_wrong() {
        for (bad, why) in [
            ("2222:22", "the protocol must be tcp or udp"),
            ("sctp::1-:2", "the protocol must be tcp or udp"),
            ("tcp::2222:22", "joined by '-'"),
            ("tcp:localhost:2222-:22", "not an IPv4 address"),
            ("tcp::0-:22", "host port"),
            ("tcp::70000-:22", "host port"),
            ("tcp::2222-10.0.2.15:22", "guest address must be left out"),
            ("tcp::2222-:", "guest port"),
        ] {
            let e = bad.parse::<Forward>().unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn definitions_store_the_written_forms() {
        let f: Forward = "tcp::2222-:22".parse().unwrap();
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            "\"tcp:127.0.0.1:2222-:22\""
        );
        let m: NetMode = serde_json::from_str("\"tap:vmtap0\"").unwrap();
        assert_eq!(m, NetMode::Tap("vmtap0".into()));
        assert!(serde_json::from_str::<MacAddr>("\"zz\"").is_err());
    }
}

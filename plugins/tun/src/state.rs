//! What the plugin keeps in an image (`plugin_data` under "tun", bincode).

use serde::{Deserialize, Serialize};

use rewind_ckpt::image::format::ProcessState;
use rewind_ckpt::Error;

/// Version of [`Saved`]; an image with another one is refused.
pub const VERSION: u32 = 1;

/// Everything about the program's tun descriptors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub version: u32,
    /// One per open file description of /dev/net/tun.
    pub files: Vec<TunFile>,
    /// The interfaces those files are attached to.
    pub devices: Vec<Device>,
}

/// One open file description of /dev/net/tun (an `open`), with every
/// descriptor that refers to it (dup'd ones).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunFile {
    /// Ascending; the first is the one recreated by `open`, the others dup it.
    pub fds: Vec<Fd>,
    /// File status flags (access mode, O_NONBLOCK, O_ASYNC).
    pub flags: u32,
    /// The interface it is attached to (TUNSETIFF); None: never attached.
    pub device: Option<String>,
    /// Packets drained from it at the checkpoint, in order, exactly as
    /// read() returned them (with the packet-information and virtio-net
    /// headers the device was configured for).
    pub queue: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fd {
    pub fd: i32,
    pub cloexec: bool,
}

/// A tun or tap interface and its configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub name: String,
    /// TUNGETIFF flags: IFF_TUN/IFF_TAP, IFF_NO_PI, IFF_VNET_HDR,
    /// IFF_MULTI_QUEUE, IFF_PERSIST...
    pub tun_flags: u16,
    pub ifindex: i32,
    pub vnet_hdr_sz: i32,
    pub sndbuf: i32,
    pub vnet_le: Option<bool>,
    pub vnet_be: Option<bool>,
    /// SIOCGIFFLAGS.
    pub link_flags: u32,
    pub mtu: i32,
    pub txqlen: i32,
    /// SIOCGIFHWADDR: the link type (ARPHRD_*) and, for tap, the MAC.
    pub hw_type: u16,
    pub hwaddr: Vec<u8>,
    /// Addresses (IPv4 and IPv6 but link-local), as rtnetlink reports them.
    pub addresses: Vec<NlObject>,
    /// Routes through the interface that the kernel did not make itself.
    pub routes: Vec<NlObject>,
    /// Settings known only from the trapped ioctls.
    pub tracked: Tracked,
}

/// A rtnetlink object: its fixed header (struct ifaddrmsg or rtmsg) and
/// attributes (type, payload), the interface index ones left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NlObject {
    pub header: Vec<u8>,
    pub attrs: Vec<(u16, Vec<u8>)>,
}

/// Device settings the kernel offers no way to read back, seen through the
/// program's successful ioctls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracked {
    pub offload: Option<u32>,
    pub owner: Option<u32>,
    pub group: Option<u32>,
    /// TUNSETCARRIER, or IFF_NO_CARRIER at TUNSETIFF.
    pub carrier: Option<bool>,
    /// ioctls whose effect is not restored (filters, queue detaching).
    pub unsupported: Vec<String>,
}

impl Saved {
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        bincode::serde::encode_to_vec(self, bincode::config::standard())
            .map_err(|e| Error::Tracee(format!("tun plugin: cannot encode its state: {e}")))
    }

    pub fn decode(bytes: &[u8]) -> Result<Saved, Error> {
        let (saved, _): (Saved, usize) =
            bincode::serde::decode_from_slice(bytes, bincode::config::standard()).map_err(|e| {
                Error::Restore(format!("the image's tun plugin data is corrupt: {e}"))
            })?;
        if saved.version != VERSION {
            return Err(Error::Restore(format!(
                "the image's tun plugin data has version {}, this rewind reads version {VERSION}",
                saved.version
            )));
        }
        Ok(saved)
    }

    /// The plugin's state in a process state, if it saved any.
    pub fn from_state(state: &ProcessState) -> Result<Option<Saved>, Error> {
        state
            .plugin_data
            .iter()
            .find(|(name, _)| name == crate::NAME)
            .map(|(_, bytes)| Saved::decode(bytes))
            .transpose()
    }

    pub fn device(&self, name: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_check() {
        let saved = Saved {
            version: VERSION,
            files: vec![TunFile {
                fds: vec![Fd {
                    fd: 3,
                    cloexec: true,
                }],
                flags: 2,
                device: Some("tun0".into()),
                queue: vec![vec![0x45, 0, 0, 20], vec![]],
            }],
            devices: vec![Device {
                name: "tun0".into(),
                tun_flags: 0x1001,
                addresses: vec![NlObject {
                    header: vec![2, 24, 0, 0, 0, 0, 0, 0],
                    attrs: vec![(2, vec![10, 77, 0, 1])],
                }],
                ..Default::default()
            }],
        };
        let bytes = saved.encode().unwrap();
        assert_eq!(Saved::decode(&bytes).unwrap(), saved);
        let newer = Saved {
            version: VERSION + 1,
            ..saved
        };
        let err = Saved::decode(&newer.encode().unwrap()).unwrap_err();
        assert!(err.to_string().contains("version"), "{err}");
        assert!(Saved::decode(&[0xff; 3]).is_err());
    }
}

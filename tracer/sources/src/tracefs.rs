//! Reads the running kernel's tracepoint layouts from tracefs, so that one BPF object works on
//! every kernel: field names and offsets become a [`HookLayout`] for the kernel programs, and the
//! `sk_rst_reason` names in the print format become the decoder's reason table.
//!
//! A field we depend on that is missing or has an unexpected size is an error naming the field,
//! never a silent zero.
use std::{collections::BTreeMap, fs, path::Path};

use anyhow::{bail, Context, Result};
use tracer_common::{HookLayout, ABSENT, RECORD_MAX};

pub const TRACEFS: &str = "/sys/kernel/tracing";
/// Tracepoint records are at most a page.
const MAX_RECORD: u32 = 4096;

/// Mounts tracefs when the system has not (minimal servers and containers often don't).
/// A directory other than the default must already hold the formats.
pub fn ensure_mounted(root: &Path) -> Result<()> {
    if root.join("events").is_dir() {
        return Ok(());
    }
    if root != Path::new(TRACEFS) {
        bail!("{} has no events/ directory: is tracefs mounted there?", root.display());
    }
    let mount = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", TRACEFS])
        .output()
        .context("tracefs is not mounted and `mount` could not be run")?;
    // Judged by the result, not by `mount`'s status: another tracer starting at the same moment
    // may have mounted it first, and then ours fails with "already mounted".
    if !Path::new(TRACEFS).join("events").is_dir() {
        let said = String::from_utf8_lossy(&mount.stderr);
        bail!("tracefs is not mounted at {TRACEFS} ({}); mount it with `mount -t tracefs nodev {TRACEFS}`", said.trim());
    }
    Ok(())
}

/// One `field:` line of a tracepoint format file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: u16,
    pub size: u16,
}

/// A parsed tracepoint `format` file.
#[derive(Clone, Debug, Default)]
pub struct Format {
    pub fields: BTreeMap<String, Field>,
    pub print_fmt: String,
}

impl Format {
    pub fn read(root: &Path, category: &str, name: &str) -> Result<Option<Format>> {
        let path = root.join("events").join(category).join(name).join("format");
        match fs::read_to_string(&path) {
            Ok(text) => Format::parse(&text).map(Some).with_context(|| format!("cannot parse {}", path.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub fn parse(text: &str) -> Result<Format> {
        let mut format = Format::default();
        for line in text.lines().map(str::trim) {
            if let Some(fmt) = line.strip_prefix("print fmt:") {
                format.print_fmt = fmt.trim().to_string();
                continue;
            }
            let Some(rest) = line.strip_prefix("field:") else { continue };
            let mut parts = rest.split(';').map(str::trim);
            let declaration = parts.next().unwrap_or_default();
            let (mut offset, mut size) = (None, None);
            for part in parts {
                if let Some(value) = part.strip_prefix("offset:") {
                    offset = value.parse::<u16>().ok();
                } else if let Some(value) = part.strip_prefix("size:") {
                    size = value.parse::<u16>().ok();
                }
            }
            let (Some(offset), Some(size)) = (offset, size) else {
                bail!("malformed field line: {line}");
            };
            // "const void * skaddr", "__u8 saddr[4]": the name is the last word, without the array.
            let name = declaration.rsplit([' ', '*']).next().unwrap_or_default();
            let name = name.split('[').next().unwrap_or_default();
            // A record fits in a page; anything beyond is a corrupted or foreign format.
            if name.is_empty() || u32::from(offset) + u32::from(size) > MAX_RECORD {
                bail!("malformed field line: {line}");
            }
            format.fields.insert(name.to_string(), Field { offset, size });
        }
        if format.fields.is_empty() {
            bail!("no fields found");
        }
        let mut spans: Vec<(u16, u16, &str)> = format.fields.iter().map(|(name, f)| (f.offset, f.offset + f.size, name.as_str())).collect();
        spans.sort();
        if let Some(pair) = spans.windows(2).find(|pair| pair[1].0 < pair[0].1) {
            bail!("malformed format: fields `{}` and `{}` overlap", pair[0].2, pair[1].2);
        }
        Ok(format)
    }

    /// The offset of `name`, checking its size; [`ABSENT`] when the field does not exist.
    fn offset(&self, hook: &str, name: &str, sizes: &[u16]) -> Result<u16> {
        match self.fields.get(name) {
            None => Ok(ABSENT),
            Some(field) if sizes.contains(&field.size) => Ok(field.offset),
            Some(field) => bail!(
                "tracepoint {hook}: field `{name}` has size {} (expected {sizes:?}); this kernel's layout is not supported",
                field.size
            ),
        }
    }

    /// Maps the fields this kernel has onto the kernel programs' layout.
    pub fn layout(&self, hook: &str) -> Result<HookLayout> {
        let mut layout = HookLayout::NONE;
        layout.socket = self.offset(hook, "skaddr", &[8])?;
        layout.skb = self.offset(hook, "skbaddr", &[8])?;
        layout.old_state = self.offset(hook, "oldstate", &[4])?;
        layout.new_state = match self.offset(hook, "newstate", &[4])? {
            ABSENT => self.offset(hook, "state", &[4])?,
            offset => offset,
        };
        layout.local_port = self.offset(hook, "sport", &[2])?;
        layout.remote_port = self.offset(hook, "dport", &[2])?;
        layout.family = self.offset(hook, "family", &[2])?;
        layout.protocol = self.offset(hook, "protocol", &[2])?;
        layout.local_addr6 = self.offset(hook, "saddr_v6", &[16])?;
        layout.remote_addr6 = self.offset(hook, "daddr_v6", &[16])?;
        layout.reason = self.offset(hook, "reason", &[4])?;
        // From Linux 6.10 the reset hooks carry `struct sockaddr_in6`-sized blobs with the ports.
        match self.fields.get("saddr").map(|field| field.size) {
            Some(28) => {
                layout.local_sockaddr = self.offset(hook, "saddr", &[28])?;
                layout.remote_sockaddr = self.offset(hook, "daddr", &[28])?;
            }
            _ => {
                layout.local_addr4 = self.offset(hook, "saddr", &[4])?;
                layout.remote_addr4 = self.offset(hook, "daddr", &[4])?;
            }
        }
        layout.record_len = self.record_len(&layout)?;
        let has_ports = layout.local_sockaddr != ABSENT || (layout.local_port != ABSENT && layout.remote_port != ABSENT);
        let has_addresses = layout.local_sockaddr != ABSENT || layout.local_addr4 != ABSENT || layout.local_addr6 != ABSENT;
        for (present, what) in
            [(layout.socket != ABSENT, "skaddr"), (has_ports, "sport/dport (or a sockaddr saddr)"), (has_addresses, "saddr/daddr")]
        {
            if !present {
                bail!("tracepoint {hook} has no `{what}` field; this kernel's layout is not supported");
            }
        }
        Ok(layout)
    }

    /// The end of the last field the layout uses: the program copies that much of the record.
    fn record_len(&self, layout: &HookLayout) -> Result<u16> {
        let used = [
            layout.socket,
            layout.skb,
            layout.old_state,
            layout.new_state,
            layout.local_port,
            layout.remote_port,
            layout.family,
            layout.protocol,
            layout.local_addr4,
            layout.remote_addr4,
            layout.local_addr6,
            layout.remote_addr6,
            layout.local_sockaddr,
            layout.remote_sockaddr,
            layout.reason,
        ];
        let end = self
            .fields
            .values()
            .filter(|field| used.contains(&field.offset))
            .map(|field| field.offset + field.size)
            .max()
            .unwrap_or(0)
            // The first word is the caller's registers pointer (process-context check).
            .max(8);
        if usize::from(end) > RECORD_MAX {
            bail!("this kernel's tracepoint record uses {end} bytes; the tracer copies at most {RECORD_MAX}");
        }
        Ok(end)
    }

    /// Names of `sk_rst_reason` values, from `__print_symbolic(REC->reason, { 0, "NOT_SPECIFIED" }, …)`.
    pub fn reason_names(&self) -> BTreeMap<u32, String> {
        let Some(start) = self.print_fmt.find("__print_symbolic(REC->reason") else {
            return BTreeMap::new();
        };
        let text = &self.print_fmt[start..];
        let text = &text[..text.find("})").map_or(text.len(), |end| end + 1)];
        text.split('{')
            .skip(1)
            .filter_map(|entry| {
                let (value, name) = entry.split_once(',')?;
                let name = name.split('"').nth(1)?;
                Some((value.trim().parse().ok()?, name.to_string()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const SEND_RESET_5_10: &str = include_str!("../../fixtures/tcp_send_reset-5.10.format");
    pub const SEND_RESET_6_1: &str = include_str!("../../fixtures/tcp_send_reset-6.1.format");
    pub const SEND_RESET_6_18: &str = include_str!("../../fixtures/tcp_send_reset-6.18.format");
    pub const SET_STATE: &str = include_str!("../../fixtures/inet_sock_set_state.format");

    #[test]
    fn linux_5_10_reset_layout_has_ports_and_v4_v6_addresses_but_no_family() {
        let layout = Format::parse(SEND_RESET_5_10).unwrap().layout("tcp_send_reset").unwrap();
        assert_eq!((layout.socket, layout.skb), (16, 8));
        assert_eq!((layout.new_state, layout.local_port, layout.remote_port), (24, 28, 30));
        assert_eq!((layout.local_addr4, layout.remote_addr4), (32, 36));
        assert_eq!((layout.local_addr6, layout.remote_addr6), (40, 56));
        assert_eq!((layout.family, layout.reason, layout.local_sockaddr), (ABSENT, ABSENT, ABSENT));
        assert_eq!(layout.record_len, 72);
    }

    #[test]
    fn linux_6_1_reset_layout_adds_family_and_moves_addresses() {
        let layout = Format::parse(SEND_RESET_6_1).unwrap().layout("tcp_send_reset").unwrap();
        assert_eq!((layout.family, layout.local_addr4, layout.remote_addr4), (32, 34, 38));
        assert_eq!((layout.local_addr6, layout.remote_addr6), (42, 58));
        assert_eq!(layout.reason, ABSENT);
    }

    #[test]
    fn linux_6_10_and_later_reset_layout_uses_sockaddrs_and_carries_the_reason() {
        let format = Format::parse(SEND_RESET_6_18).unwrap();
        let layout = format.layout("tcp_send_reset").unwrap();
        assert_eq!((layout.new_state, layout.reason), (24, 28));
        assert_eq!((layout.local_sockaddr, layout.remote_sockaddr), (32, 60));
        assert_eq!(layout.record_len, 88);
        assert_eq!((layout.local_port, layout.local_addr4, layout.family), (ABSENT, ABSENT, ABSENT));
        let reasons = format.reason_names();
        assert_eq!(reasons.get(&1).map(String::as_str), Some("NO_SOCKET"));
        assert_eq!(reasons.get(&12).map(String::as_str), Some("TCP_ABORT_ON_LINGER"));
        assert_eq!(reasons.len(), 26);
    }

    #[test]
    fn state_change_layout_reads_old_and_new_state_and_protocol() {
        let layout = Format::parse(SET_STATE).unwrap().layout("inet_sock_set_state").unwrap();
        assert_eq!((layout.socket, layout.old_state, layout.new_state), (8, 16, 20));
        assert_eq!((layout.family, layout.protocol), (28, 30));
        assert!(Format::parse(SET_STATE).unwrap().reason_names().is_empty());
    }

    #[test]
    fn a_renamed_field_is_an_error_that_names_it() {
        let renamed = SET_STATE.replace(" skaddr;", " sk_pointer;");
        let error = Format::parse(&renamed).unwrap().layout("inet_sock_set_state").unwrap_err();
        assert!(error.to_string().contains("skaddr"), "{error}");
    }

    #[test]
    fn a_field_of_unexpected_size_is_rejected() {
        let resized = SET_STATE.replace("offset:56;\tsize:16;", "offset:56;\tsize:8;");
        let error = Format::parse(&resized).unwrap().layout("inet_sock_set_state").unwrap_err();
        assert!(error.to_string().contains("`daddr_v6` has size 8"), "{error}");
        let overlapping = SET_STATE.replace("offset:24;\tsize:2;", "offset:24;\tsize:4;");
        assert!(Format::parse(&overlapping).unwrap_err().to_string().contains("`sport` and `dport` overlap"));
    }

    #[test]
    fn garbage_is_an_error_not_an_empty_layout() {
        assert!(Format::parse("name: x\nID: 1\nformat:\n").is_err());
        assert!(Format::parse("field:int x;\toffset:zz;\tsize:4;").is_err());
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_text_never_panics_the_parser(text in "\\PC{0,400}") {
                if let Ok(format) = Format::parse(&text) {
                    let _ = format.layout("fuzz");
                    let _ = format.reason_names();
                }
            }

            #[test]
            fn real_formats_with_mangled_offsets_and_sizes_give_a_layout_or_an_error(
                which in 0usize..4,
                line in 0usize..20,
                offset in prop_oneof![0u32..128, 0u32..70_000, any::<u32>()],
                size in prop_oneof![0u32..32, any::<u32>()],
            ) {
                let text = [SEND_RESET_5_10, SEND_RESET_6_1, SEND_RESET_6_18, SET_STATE][which];
                let mangled: String = text
                    .lines()
                    .enumerate()
                    .map(|(i, l)| if i == line && l.contains("offset:") {
                        let name = l.split(';').next().unwrap();
                        format!("{name};\toffset:{offset};\tsize:{size};\tsigned:0;\n")
                    } else {
                        format!("{l}\n")
                    })
                    .collect();
                match Format::parse(&mangled) {
                    Ok(format) => {
                        if let Ok(layout) = format.layout("fuzz") {
                            // Whatever was accepted points inside the record the kernel would hand us.
                            for offset in [layout.socket, layout.local_port, layout.remote_port, layout.new_state] {
                                prop_assert!(offset == ABSENT || u32::from(offset) < MAX_RECORD);
                            }
                        }
                    }
                    Err(error) => prop_assert!(error.to_string().contains("malformed")),
                }
            }
        }
    }
}

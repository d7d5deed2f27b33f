//! Human names for MBR system IDs and GPT partition type GUIDs.
//!
//! Names follow what fdisk/sfdisk print, so users see the same words in blockwise as in the
//! tools they already know. Unknown codes get a generic name, never an error.

/// MBR system IDs of extended (container) partitions whose EBR chain Linux follows.
pub(crate) const MBR_EXTENDED: [u8; 3] = [0x05, 0x0f, 0x85];

/// MBR system ID of the GPT protective entry.
pub(crate) const MBR_GPT_PROTECTIVE: u8 = 0xee;

/// MBR system ID of an EFI System Partition.
pub(crate) const MBR_ESP: u8 = 0xef;

/// GPT type GUID of an EFI System Partition.
pub(crate) const ESP_GUID: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";

/// True for the MBR system IDs that mark an extended partition.
pub(crate) fn is_mbr_extended(code: u8) -> bool {
    MBR_EXTENDED.contains(&code)
}

/// Name of an MBR system ID ("W95 FAT32 (LBA)"); "Unknown" for codes not in the table.
pub(crate) fn mbr_type_name(code: u8) -> &'static str {
    match code {
        0x00 => "Empty",
        0x01 => "FAT12",
        0x02 => "XENIX root",
        0x03 => "XENIX usr",
        0x04 => "FAT16 <32M",
        0x05 => "Extended",
        0x06 => "FAT16",
        0x07 => "HPFS/NTFS/exFAT",
        0x08 => "AIX",
        0x09 => "AIX bootable",
        0x0a => "OS/2 Boot Manager",
        0x0b => "W95 FAT32",
        0x0c => "W95 FAT32 (LBA)",
        0x0e => "W95 FAT16 (LBA)",
        0x0f => "W95 Ext'd (LBA)",
        0x11 => "Hidden FAT12",
        0x12 => "Compaq diagnostics",
        0x14 => "Hidden FAT16 <32M",
        0x16 => "Hidden FAT16",
        0x17 => "Hidden HPFS/NTFS",
        0x1b => "Hidden W95 FAT32",
        0x1c => "Hidden W95 FAT32 (LBA)",
        0x1e => "Hidden W95 FAT16 (LBA)",
        0x27 => "Hidden NTFS WinRE",
        0x39 => "Plan 9",
        0x41 => "PPC PReP Boot",
        0x42 => "SFS",
        0x4d => "QNX4.x",
        0x4e => "QNX4.x 2nd part",
        0x4f => "QNX4.x 3rd part",
        0x63 => "GNU HURD or SysV",
        0x80 => "Old Minix",
        0x81 => "Minix / old Linux",
        0x82 => "Linux swap / Solaris",
        0x83 => "Linux",
        0x84 => "OS/2 hidden or Intel hibernation",
        0x85 => "Linux extended",
        0x86 | 0x87 => "NTFS volume set",
        0x88 => "Linux plaintext",
        0x8e => "Linux LVM",
        0x9f => "BSD/OS",
        0xa0 => "IBM Thinkpad hibernation",
        0xa5 => "FreeBSD",
        0xa6 => "OpenBSD",
        0xa7 => "NeXTSTEP",
        0xa8 => "Darwin UFS",
        0xa9 => "NetBSD",
        0xab => "Darwin boot",
        0xaf => "HFS / HFS+",
        0xb7 => "BSDI fs",
        0xb8 => "BSDI swap",
        0xbc => "Acronis FAT32 LBA",
        0xbe => "Solaris boot",
        0xbf => "Solaris",
        0xc1 => "DRDOS/sec (FAT-12)",
        0xc4 => "DRDOS/sec (FAT-16 < 32M)",
        0xc6 => "DRDOS/sec (FAT-16)",
        0xda => "Non-FS data",
        0xdb => "CP/M / CTOS / ...",
        0xde => "Dell Utility",
        0xdf => "BootIt",
        0xea => "Linux extended boot",
        0xeb => "BeOS fs",
        0xee => "GPT",
        0xef => "EFI (FAT-12/16/32)",
        0xf0 => "Linux/PA-RISC boot",
        0xf2 => "DOS secondary",
        0xf8 => "EBBR protective",
        0xfb => "VMware VMFS",
        0xfc => "VMware VMKCORE",
        0xfd => "Linux raid autodetect",
        0xfe => "LANstep",
        0xff => "BBT",
        _ => "Unknown",
    }
}

/// Known GPT partition type GUIDs (lowercase text form) and their names.
const GPT_TYPES: &[(&str, &str)] = &[
    ("c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "EFI System"),
    (
        "024dee41-33e7-11d3-9d69-0008c781f39f",
        "MBR partition scheme",
    ),
    ("21686148-6449-6e6f-744e-656564454649", "BIOS boot"),
    ("d3bfe2de-3daf-11df-ba40-e3a556d89593", "Intel Fast Flash"),
    ("9e1a2d38-c612-4316-aa26-8b49521e5a8b", "PowerPC PReP boot"),
    ("e3c9e316-0b5c-4db8-817d-f92df00215ae", "Microsoft reserved"),
    (
        "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7",
        "Microsoft basic data",
    ),
    (
        "5808c8aa-7e8f-42e0-85d2-e1e90434cfb3",
        "Microsoft LDM metadata",
    ),
    ("af9b60a0-1431-4f62-bc68-3311714a69ad", "Microsoft LDM data"),
    (
        "de94bba4-06d1-4d40-a16a-bfd50179d6ac",
        "Windows recovery environment",
    ),
    (
        "e75caf8f-f680-4cee-afa3-b001e56efc2d",
        "Microsoft Storage Spaces",
    ),
    ("0fc63daf-8483-4772-8e79-3d69d8477de4", "Linux filesystem"),
    ("0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", "Linux swap"),
    ("e6d6d379-f507-44c2-a23c-238f2a3df928", "Linux LVM"),
    ("a19d880f-05fc-4d3b-a006-743f0f84911e", "Linux RAID"),
    ("8da63339-0007-60c0-c436-083ac8230908", "Linux reserved"),
    ("933ac7e1-2eb4-4f13-b844-0e14e2aef915", "Linux home"),
    ("3b8f8425-20e0-4f3b-907f-1a25a76f98e8", "Linux server data"),
    (
        "4d21b016-b534-45c2-a9fb-5c16e091fd2d",
        "Linux variable data",
    ),
    (
        "7ec6f557-3bc5-4aca-b293-16ef5df639d1",
        "Linux temporary data",
    ),
    (
        "bc13c2ff-59e6-4262-a352-b275fd6f7172",
        "Linux extended boot",
    ),
    ("773f91ef-66d4-49b5-bd83-d683bf40ad16", "Linux user's home"),
    ("ca7d7ccb-63ed-4c53-861c-1742536059cc", "Linux LUKS"),
    ("44479540-f297-41b2-9af7-d131d5f0458a", "Linux root (x86)"),
    (
        "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
        "Linux root (x86-64)",
    ),
    ("69dad710-2ce4-4e3c-b16c-21a1d49abed3", "Linux root (ARM)"),
    (
        "b921b045-1df0-41c3-af44-4c6f280d3fae",
        "Linux root (ARM-64)",
    ),
    (
        "60d5a7fe-8e7d-435c-b714-3dd8162144e1",
        "Linux root (RISC-V-32)",
    ),
    (
        "72ec70a6-cf74-40e6-bd49-4bda08e8f224",
        "Linux root (RISC-V-64)",
    ),
    (
        "77055800-792c-4f94-b39a-98c91b762bb6",
        "Linux root (LoongArch-64)",
    ),
    ("1de3f1ef-fa98-47b5-8dcd-4a860a654d78", "Linux root (PPC)"),
    ("912ade1d-a839-4913-8964-a10eee08fbd2", "Linux root (PPC64)"),
    (
        "c31c45e6-3f39-412e-80fb-4809c4980599",
        "Linux root (PPC64LE)",
    ),
    ("5eead9a9-fe09-4a1e-a1d7-520d00531306", "Linux root (S390X)"),
    ("75250d76-8cc6-458e-bd66-bd47cc81a812", "Linux /usr (x86)"),
    (
        "8484680c-9521-48c6-9c11-b0720656f69e",
        "Linux /usr (x86-64)",
    ),
    ("7d0359a3-02b3-4f0a-865c-654403e70625", "Linux /usr (ARM)"),
    (
        "b0e01050-ee5f-4390-949a-9101b17104e9",
        "Linux /usr (ARM-64)",
    ),
    (
        "beaec34b-8442-439b-a40b-984381ed097d",
        "Linux /usr (RISC-V-64)",
    ),
    (
        "d13c5d3b-b5d1-422a-b29f-9454fdc89d76",
        "Linux root verity (x86)",
    ),
    (
        "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5",
        "Linux root verity (x86-64)",
    ),
    (
        "7386cdf2-203c-47a9-a498-f2ecce45a2d6",
        "Linux root verity (ARM)",
    ),
    (
        "df3300ce-d69f-4c92-978c-9bfb0f38d820",
        "Linux root verity (ARM-64)",
    ),
    (
        "8f461b0d-14ee-4e81-9aa9-049b6fb97abd",
        "Linux /usr verity (x86)",
    ),
    (
        "77ff5f63-e7b6-4633-acf4-1565b864c0e6",
        "Linux /usr verity (x86-64)",
    ),
    (
        "c215d751-7bcd-4649-be90-6627490a4c05",
        "Linux /usr verity (ARM)",
    ),
    (
        "6e11a4e7-fbca-4ded-b9e9-e1a512bb664e",
        "Linux /usr verity (ARM-64)",
    ),
    ("fe3a2a5d-4f32-41a7-b725-accc3285a309", "ChromeOS kernel"),
    ("3cb8e202-3b7e-47dd-8a3c-7ff2a13cfcec", "ChromeOS root fs"),
    ("2e0a753d-9e48-43b0-8337-b15192cb1b5e", "ChromeOS reserved"),
    ("516e7cb4-6ecf-11d6-8ff8-00022d09712b", "FreeBSD data"),
    ("83bd6b9d-7f41-11dc-be0b-001560b84f0f", "FreeBSD boot"),
    ("516e7cb5-6ecf-11d6-8ff8-00022d09712b", "FreeBSD swap"),
    ("516e7cb6-6ecf-11d6-8ff8-00022d09712b", "FreeBSD UFS"),
    ("516e7cba-6ecf-11d6-8ff8-00022d09712b", "FreeBSD ZFS"),
    ("516e7cb8-6ecf-11d6-8ff8-00022d09712b", "FreeBSD Vinum"),
    ("48465300-0000-11aa-aa11-00306543ecac", "Apple HFS/HFS+"),
    ("7c3457ef-0000-11aa-aa11-00306543ecac", "Apple APFS"),
    ("55465300-0000-11aa-aa11-00306543ecac", "Apple UFS"),
    ("52414944-0000-11aa-aa11-00306543ecac", "Apple RAID"),
    ("426f6f74-0000-11aa-aa11-00306543ecac", "Apple boot"),
    (
        "6a898cc3-1dd2-11b2-99a6-080020736631",
        "Solaris /usr & Apple ZFS",
    ),
    ("75894c1e-3aeb-11d3-b7c1-7b03a0000000", "HP-UX data"),
    (
        "37affc90-ef7d-4e96-91c3-2d7ae055b174",
        "IBM General Parallel Fs",
    ),
];

/// Name of a GPT partition type GUID given in lowercase text form; "Unknown" otherwise.
pub(crate) fn gpt_type_name(guid: &str) -> &'static str {
    GPT_TYPES
        .iter()
        .find(|(g, _)| g.eq_ignore_ascii_case(guid))
        .map_or("Unknown", |(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(mbr_type_name(0x0c), "W95 FAT32 (LBA)");
        assert_eq!(mbr_type_name(0x83), "Linux");
        assert_eq!(mbr_type_name(0x99), "Unknown");
        assert!(is_mbr_extended(0x85) && !is_mbr_extended(0x83));
        assert_eq!(
            gpt_type_name("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            "EFI System"
        );
        assert_eq!(
            gpt_type_name("00000000-0000-0000-0000-000000000001"),
            "Unknown"
        );
    }

    #[test]
    fn gpt_table_is_well_formed() {
        for (g, n) in GPT_TYPES {
            assert_eq!(g.len(), 36, "{n}");
            assert_eq!(*g, g.to_ascii_lowercase(), "{n}");
        }
    }
}

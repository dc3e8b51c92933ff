//! Reading and writing packet captures (pcap and pcapng), so that users can
//! check their own Wireshark/tcpdump captures and softrdma can write ones that
//! Wireshark reads.

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::DataLink;

/// One captured frame.
#[derive(Debug, Clone)]
pub struct CapturedFrame {
    /// 1-based position in the file, counting every packet record (as Wireshark numbers them).
    pub number: usize,
    pub timestamp: Duration,
    pub data: Vec<u8>,
    /// Length on the wire; larger than `data.len()` when the capture's snaplen cut it.
    pub original_len: usize,
    /// Whether the frame starts with an Ethernet header (link type EN10MB).
    pub ethernet: bool,
}

impl CapturedFrame {
    pub fn is_truncated(&self) -> bool {
        self.original_len > self.data.len()
    }
}

#[derive(Debug)]
pub enum CaptureError {
    Io(std::io::Error),
    Format(String),
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureError::Io(e) => write!(f, "{e}"),
            CaptureError::Format(e) => write!(f, "not a readable pcap/pcapng file: {e}"),
        }
    }
}

impl std::error::Error for CaptureError {}

impl From<std::io::Error> for CaptureError {
    fn from(e: std::io::Error) -> Self {
        CaptureError::Io(e)
    }
}

const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Reads every frame of a pcap or pcapng file (told apart by their magic).
pub fn read_frames(path: &Path) -> Result<Vec<CapturedFrame>, CaptureError> {
    let mut bytes = Vec::new();
    BufReader::new(File::open(path)?).read_to_end(&mut bytes)?;
    if bytes.starts_with(&PCAPNG_MAGIC) {
        read_pcapng(&bytes)
    } else {
        read_pcap(&bytes)
    }
}

fn fmt_err(e: pcap_file::PcapError) -> CaptureError {
    CaptureError::Format(e.to_string())
}

fn read_pcap(bytes: &[u8]) -> Result<Vec<CapturedFrame>, CaptureError> {
    let mut r = PcapReader::new(bytes).map_err(fmt_err)?;
    let ethernet = r.header().datalink == DataLink::ETHERNET;
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.map_err(fmt_err)?;
        out.push(CapturedFrame {
            number: out.len() + 1,
            timestamp: p.timestamp,
            original_len: p.orig_len as usize,
            data: p.data.into_owned(),
            ethernet,
        });
    }
    Ok(out)
}

fn read_pcapng(bytes: &[u8]) -> Result<Vec<CapturedFrame>, CaptureError> {
    let mut r = PcapNgReader::new(bytes).map_err(fmt_err)?;
    let mut out = Vec::new();
    // Link types of the current section's interfaces, by interface id.
    let mut links: Vec<DataLink> = Vec::new();
    while let Some(block) = r.next_block() {
        let (data, original_len, timestamp, interface) = match block.map_err(fmt_err)? {
            Block::SectionHeader(_) => {
                links.clear();
                continue;
            }
            Block::InterfaceDescription(i) => {
                links.push(i.linktype);
                continue;
            }
            Block::EnhancedPacket(p) => {
                (p.data.into_owned(), p.original_len as usize, p.timestamp, p.interface_id as usize)
            }
            Block::SimplePacket(p) => (p.data.into_owned(), p.original_len as usize, Duration::ZERO, 0),
            _ => continue,
        };
        let ethernet = links.get(interface) == Some(&DataLink::ETHERNET);
        out.push(CapturedFrame { number: out.len() + 1, timestamp, data, original_len, ethernet });
    }
    Ok(out)
}

/// Writes Ethernet frames to a classic pcap file (readable by every tool).
pub struct PcapSink<W: Write> {
    writer: PcapWriter<W>,
}

impl<W: Write> PcapSink<W> {
    pub fn new(w: W) -> Result<Self, CaptureError> {
        let header = PcapHeader { datalink: DataLink::ETHERNET, snaplen: 65535, ..Default::default() };
        Ok(PcapSink { writer: PcapWriter::with_header(w, header).map_err(fmt_err)? })
    }

    pub fn write(&mut self, timestamp: Duration, frame: &[u8]) -> Result<(), CaptureError> {
        let p = PcapPacket::new(timestamp, frame.len() as u32, frame);
        self.writer.write_packet(&p).map_err(fmt_err)?;
        Ok(())
    }

    pub fn into_inner(self) -> W {
        self.writer.into_writer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_captures_read_back() {
        let mut sink = PcapSink::new(Vec::new()).unwrap();
        sink.write(Duration::from_micros(5), &[1, 2, 3]).unwrap();
        sink.write(Duration::from_micros(9), &[4; 70]).unwrap();
        let bytes = sink.into_inner();
        let frames = read_pcap(&bytes).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].data, vec![1, 2, 3]);
        assert_eq!(frames[1].timestamp, Duration::from_micros(9));
        assert!(frames.iter().all(|f| f.ethernet && !f.is_truncated()));
    }

    #[test]
    fn garbage_is_a_format_error_not_a_panic() {
        assert!(matches!(read_pcap(&[0u8; 10]), Err(CaptureError::Format(_))));
        assert!(matches!(read_pcapng(&[0x0a, 0x0d, 0x0d, 0x0a, 1]), Err(CaptureError::Format(_))));
    }
}

//! The peer protocol's messages: what Quiver nodes say to each other (Raft messages and
//! segment chunks), and the two handshake frames that authenticate a connection. Plain bytes,
//! no I/O: `peer_quic.rs` carries them; `docs/PEERS.md` is the byte-level specification.
//!
//! `quiver-net` must not depend on `quiver-raft` (the client crate depends on this one), so
//! this module has its own model of a Raft message. [`PeerMessageKind`] mirrors
//! `quiver_raft::MessageKind` field for field, and [`PeerEntry`] mirrors `quiver_raft::Entry`;
//! the server converts one to the other 1:1.
//!
//! Every message is one frame (`frame.rs`: 8-byte header with length, kind and flags 0)
//! whose payload starts with a common header:
//!
//! ```text
//! offset size field
//! 0      1    version  PEER_VERSION (1)
//! 1      8    from     sender's node id
//! 9      8    to       receiver's node id
//! 17     8    term     sender's term
//! 25     ..   the kind's fields (docs/PEERS.md)
//! ```
//!
//! Decoding hands out entry data and chunk data as slices of the received payload (no
//! copies) and returns a [`PeerDecodeError`] on any malformed input, never a panic.

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::{self, Frame, FrameError, FRAME_HEADER_BYTES, FRAME_PAYLOAD_BYTES_MAX};
use crate::wire::{DecodeError, Reader};

/// ALPN protocol name of the peer protocol: a client connection (`quiver/1`) can never be
/// mistaken for a peer, nor the reverse.
pub const PEER_ALPN: &[u8] = b"quiver-peer/1";
/// The version byte every peer payload starts with.
pub const PEER_VERSION: u8 = 1;
/// Largest peer frame payload accepted: one entry may carry an engine record body of 64 MiB
/// (`RECORD_BODY_BYTES_MAX`) plus its command header, and the append its own fields, so the
/// client protocol's hard maximum plus 64 KiB of headroom.
pub const PEER_FRAME_PAYLOAD_BYTES_MAX: usize = FRAME_PAYLOAD_BYTES_MAX + (64 << 10);
/// The common header of every Raft message payload: version, from, to, term.
pub const MESSAGE_HEADER_BYTES: usize = 1 + 8 + 8 + 8;
/// One entry's fixed part: index, term, kind, data length.
pub const ENTRY_HEADER_BYTES: usize = 8 + 8 + 1 + 4;
/// Size of an authentication proof (HMAC-SHA256).
pub const PROOF_BYTES: usize = 32;
/// An authentication frame's payload: version, from, to, incarnation, proof.
pub const AUTH_PAYLOAD_BYTES: usize = 1 + 8 + 8 + 8 + PROOF_BYTES;
/// Entry or chunk data at least this long is handed to the socket as its own `Bytes` by
/// [`PeerMessage::encode_chunks`] instead of being copied into the frame buffer.
pub const SHARED_DATA_BYTES_MIN: usize = 1024;

const _: () = assert!(PEER_FRAME_PAYLOAD_BYTES_MAX < u32::MAX as usize);
const _: () = assert!(MESSAGE_HEADER_BYTES == 25 && ENTRY_HEADER_BYTES == 21);
const _: () = assert!(AUTH_PAYLOAD_BYTES == 57);

/// Frame kinds of the peer protocol (`0x03xx`; the client protocol uses `0x01xx`/`0x02xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
#[allow(missing_docs)]
pub enum PeerKind {
    /// The dialer's proof of the cluster secret.
    Auth = 0x0300,
    /// The acceptor's proof, sent only after it verified the dialer's.
    AuthOk = 0x0301,
    PreVote = 0x0310,
    PreVoteResp = 0x0311,
    Vote = 0x0312,
    VoteResp = 0x0313,
    Append = 0x0314,
    AppendResp = 0x0315,
    TimeoutNow = 0x0316,
    ReadIndex = 0x0317,
    ReadIndexResp = 0x0318,
    Segment = 0x0319,
    SegmentResp = 0x031A,
}

impl PeerKind {
    /// The kind for a frame's kind field.
    pub fn from_u16(k: u16) -> Option<PeerKind> {
        use PeerKind::*;
        const ALL: [PeerKind; 13] = [
            Auth,
            AuthOk,
            PreVote,
            PreVoteResp,
            Vote,
            VoteResp,
            Append,
            AppendResp,
            TimeoutNow,
            ReadIndex,
            ReadIndexResp,
            Segment,
            SegmentResp,
        ];
        ALL.into_iter().find(|x| *x as u16 == k)
    }
}

/// What an entry carries (mirrors `quiver_raft::EntryKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerEntryKind {
    /// Application data (byte 0).
    Normal,
    /// A membership (byte 1).
    Membership,
}

/// One log entry (mirrors `quiver_raft::Entry`); `data` shares the received frame's buffer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerEntry {
    /// Position in the log.
    pub index: u64,
    /// Term of the leader that created it.
    pub term: u64,
    /// What `data` is.
    pub kind: PeerEntryKind,
    /// The payload.
    pub data: Bytes,
}

/// A Raft message between two nodes (mirrors `quiver_raft::Message`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerMessage {
    /// Sender.
    pub from: u64,
    /// Receiver.
    pub to: u64,
    /// Sender's term.
    pub term: u64,
    /// What it says.
    pub kind: PeerMessageKind,
}

/// The message kinds, field for field those of `quiver_raft::MessageKind` (see its docs for
/// what each field means).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum PeerMessageKind {
    /// Would you vote for me?
    PreVote { last_index: u64, last_term: u64 },
    /// Answer to a pre-vote.
    PreVoteResp { reject: bool },
    /// Vote for me.
    Vote {
        last_index: u64,
        last_term: u64,
        transfer: bool,
    },
    /// Answer to a vote.
    VoteResp { reject: bool },
    /// Entries after (`prev_index`, `prev_term`); `entries[k].index == prev_index + 1 + k`.
    Append {
        prev_index: u64,
        prev_term: u64,
        entries: Vec<PeerEntry>,
        commit: u64,
        read: u64,
    },
    /// Answer to an append.
    AppendResp {
        reject: bool,
        index: u64,
        hint: u64,
        hint_term: u64,
        read: u64,
    },
    /// Campaign now.
    TimeoutNow,
    /// A follower asks the leader for a read index.
    ReadIndex { ctx: u64 },
    /// The leader's read index.
    ReadIndexResp { ctx: u64, index: u64 },
    /// A chunk of a sealed segment.
    Segment {
        first: u64,
        last: u64,
        last_term: u64,
        prev_term: u64,
        offset: u64,
        data: Bytes,
        done: bool,
    },
    /// A follower's progress through a segment.
    SegmentResp {
        first: u64,
        received: u64,
        reject: bool,
    },
}

/// Why a peer frame was refused. Decoders return this; they never panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerDecodeError {
    /// The frame itself was refused (too large, unknown flags).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The frame's kind is not a peer message of this version (or not the one expected).
    #[error("unexpected peer frame kind {0:#06x}")]
    UnknownKind(u16),
    /// Flags are set; peer frames have none.
    #[error("peer frames carry no flags, got {0:#06x}")]
    Flags(u16),
    /// The payload's version byte is not [`PEER_VERSION`].
    #[error("peer protocol version {0}, this node speaks {PEER_VERSION}")]
    Version(u8),
    /// A field is malformed (truncated, trailing bytes, a forged count, a bad boolean...).
    #[error(transparent)]
    Malformed(#[from] DecodeError),
}

/// Where encoded bytes go: one flat buffer, or a list of chunks that shares large data.
trait Sink {
    fn buf(&mut self) -> &mut BytesMut;
    fn data(&mut self, b: &Bytes);
}

struct Flat<'a>(&'a mut BytesMut);

impl Sink for Flat<'_> {
    fn buf(&mut self) -> &mut BytesMut {
        self.0
    }
    fn data(&mut self, b: &Bytes) {
        self.0.put_slice(b);
    }
}

struct Chunks<'a> {
    head: &'a mut BytesMut,
    out: &'a mut Vec<Bytes>,
}

impl Sink for Chunks<'_> {
    fn buf(&mut self) -> &mut BytesMut {
        self.head
    }
    fn data(&mut self, b: &Bytes) {
        if b.len() < SHARED_DATA_BYTES_MIN {
            self.head.put_slice(b);
            return;
        }
        if !self.head.is_empty() {
            self.out.push(self.head.split().freeze());
        }
        self.out.push(b.clone());
    }
}

impl PeerMessage {
    /// The frame kind of this message.
    pub fn wire_kind(&self) -> PeerKind {
        use PeerMessageKind as K;
        match self.kind {
            K::PreVote { .. } => PeerKind::PreVote,
            K::PreVoteResp { .. } => PeerKind::PreVoteResp,
            K::Vote { .. } => PeerKind::Vote,
            K::VoteResp { .. } => PeerKind::VoteResp,
            K::Append { .. } => PeerKind::Append,
            K::AppendResp { .. } => PeerKind::AppendResp,
            K::TimeoutNow => PeerKind::TimeoutNow,
            K::ReadIndex { .. } => PeerKind::ReadIndex,
            K::ReadIndexResp { .. } => PeerKind::ReadIndexResp,
            K::Segment { .. } => PeerKind::Segment,
            K::SegmentResp { .. } => PeerKind::SegmentResp,
        }
    }

    /// Length of the frame's payload (header excluded), computed without encoding: the
    /// transport checks it against the limit and counts queued bytes with it.
    pub fn payload_len(&self) -> usize {
        use PeerMessageKind as K;
        MESSAGE_HEADER_BYTES
            + match &self.kind {
                K::PreVote { .. } => 16,
                K::PreVoteResp { .. } | K::VoteResp { .. } => 1,
                K::Vote { .. } => 17,
                K::Append { entries, .. } => {
                    8 + 8
                        + 8
                        + 8
                        + 4
                        + entries
                            .iter()
                            .map(|e| ENTRY_HEADER_BYTES + e.data.len())
                            .sum::<usize>()
                }
                K::AppendResp { .. } => 1 + 8 + 8 + 8 + 8,
                K::TimeoutNow => 0,
                K::ReadIndex { .. } => 8,
                K::ReadIndexResp { .. } => 16,
                K::Segment { data, .. } => 5 * 8 + 4 + data.len() + 1,
                K::SegmentResp { .. } => 8 + 8 + 1,
            }
    }

    /// Length of the whole frame, header included.
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_BYTES + self.payload_len()
    }

    /// Appends this message as one frame to `out`. The caller keeps the payload within the
    /// receiver's limit ([`PEER_FRAME_PAYLOAD_BYTES_MAX`]); the transport checks it.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.frame_len());
        self.encode_into(&mut Flat(out));
    }

    /// Encodes this message as a list of chunks to write in order: headers and small fields
    /// in buffers split from `head`, entry and chunk data of [`SHARED_DATA_BYTES_MIN`] bytes
    /// or more as the message's own `Bytes` (shared, not copied). Whatever is left in `head`
    /// afterwards belongs to the frame too: the caller pushes `head.split().freeze()` once it
    /// has encoded every message of a batch.
    pub fn encode_chunks(&self, head: &mut BytesMut, out: &mut Vec<Bytes>) {
        self.encode_into(&mut Chunks { head, out });
    }

    fn encode_into(&self, s: &mut impl Sink) {
        use PeerMessageKind as K;
        let len = self.payload_len();
        frame::put_header(s.buf(), self.wire_kind() as u16, 0, len);
        let b = s.buf();
        b.put_u8(PEER_VERSION);
        b.put_u64_le(self.from);
        b.put_u64_le(self.to);
        b.put_u64_le(self.term);
        match &self.kind {
            K::PreVote {
                last_index,
                last_term,
            } => {
                b.put_u64_le(*last_index);
                b.put_u64_le(*last_term);
            }
            K::PreVoteResp { reject } | K::VoteResp { reject } => b.put_u8(u8::from(*reject)),
            K::Vote {
                last_index,
                last_term,
                transfer,
            } => {
                b.put_u64_le(*last_index);
                b.put_u64_le(*last_term);
                b.put_u8(u8::from(*transfer));
            }
            K::Append {
                prev_index,
                prev_term,
                entries,
                commit,
                read,
            } => {
                b.put_u64_le(*prev_index);
                b.put_u64_le(*prev_term);
                b.put_u64_le(*commit);
                b.put_u64_le(*read);
                b.put_u32_le(u32::try_from(entries.len()).expect("fewer than 2^32 entries"));
                for e in entries {
                    let b = s.buf();
                    b.put_u64_le(e.index);
                    b.put_u64_le(e.term);
                    b.put_u8(match e.kind {
                        PeerEntryKind::Normal => 0,
                        PeerEntryKind::Membership => 1,
                    });
                    b.put_u32_le(u32::try_from(e.data.len()).expect("entries are below 4 GiB"));
                    s.data(&e.data);
                }
            }
            K::AppendResp {
                reject,
                index,
                hint,
                hint_term,
                read,
            } => {
                b.put_u8(u8::from(*reject));
                b.put_u64_le(*index);
                b.put_u64_le(*hint);
                b.put_u64_le(*hint_term);
                b.put_u64_le(*read);
            }
            K::TimeoutNow => {}
            K::ReadIndex { ctx } => b.put_u64_le(*ctx),
            K::ReadIndexResp { ctx, index } => {
                b.put_u64_le(*ctx);
                b.put_u64_le(*index);
            }
            K::Segment {
                first,
                last,
                last_term,
                prev_term,
                offset,
                data,
                done,
            } => {
                b.put_u64_le(*first);
                b.put_u64_le(*last);
                b.put_u64_le(*last_term);
                b.put_u64_le(*prev_term);
                b.put_u64_le(*offset);
                b.put_u32_le(u32::try_from(data.len()).expect("chunks are below 4 GiB"));
                s.data(data);
                s.buf().put_u8(u8::from(*done));
            }
            K::SegmentResp {
                first,
                received,
                reject,
            } => {
                b.put_u64_le(*first);
                b.put_u64_le(*received);
                b.put_u8(u8::from(*reject));
            }
        }
    }

    /// Decodes a frame taken by `frame::parse`. Any bytes give a message or an error.
    pub fn decode(f: &Frame) -> Result<PeerMessage, PeerDecodeError> {
        use PeerMessageKind as K;
        let kind = match PeerKind::from_u16(f.kind) {
            None | Some(PeerKind::Auth | PeerKind::AuthOk) => {
                return Err(PeerDecodeError::UnknownKind(f.kind))
            }
            Some(k) => k,
        };
        if f.flags != 0 {
            return Err(PeerDecodeError::Flags(f.flags));
        }
        let mut r = Reader::new(f.payload.clone(), "peer message");
        let version = r.u8()?;
        if version != PEER_VERSION {
            return Err(PeerDecodeError::Version(version));
        }
        let (from, to, term) = (r.u64()?, r.u64()?, r.u64()?);
        let kind = match kind {
            PeerKind::Auth | PeerKind::AuthOk => return Err(PeerDecodeError::UnknownKind(f.kind)),
            PeerKind::PreVote => K::PreVote {
                last_index: r.u64()?,
                last_term: r.u64()?,
            },
            PeerKind::PreVoteResp => K::PreVoteResp { reject: r.bool()? },
            PeerKind::Vote => K::Vote {
                last_index: r.u64()?,
                last_term: r.u64()?,
                transfer: r.bool()?,
            },
            PeerKind::VoteResp => K::VoteResp { reject: r.bool()? },
            PeerKind::Append => decode_append(&mut r)?,
            PeerKind::AppendResp => K::AppendResp {
                reject: r.bool()?,
                index: r.u64()?,
                hint: r.u64()?,
                hint_term: r.u64()?,
                read: r.u64()?,
            },
            PeerKind::TimeoutNow => K::TimeoutNow,
            PeerKind::ReadIndex => K::ReadIndex { ctx: r.u64()? },
            PeerKind::ReadIndexResp => K::ReadIndexResp {
                ctx: r.u64()?,
                index: r.u64()?,
            },
            PeerKind::Segment => K::Segment {
                first: r.u64()?,
                last: r.u64()?,
                last_term: r.u64()?,
                prev_term: r.u64()?,
                offset: r.u64()?,
                data: r.bytes32()?,
                done: r.bool()?,
            },
            PeerKind::SegmentResp => K::SegmentResp {
                first: r.u64()?,
                received: r.u64()?,
                reject: r.bool()?,
            },
        };
        r.finish()?;
        Ok(PeerMessage {
            from,
            to,
            term,
            kind,
        })
    }
}

/// An append's fields after the common header. Entry indexes must follow `prev_index` one by
/// one: a forged or corrupted list is refused here rather than handed to the core.
fn decode_append(r: &mut Reader) -> Result<PeerMessageKind, DecodeError> {
    let (prev_index, prev_term, commit, read) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
    let n = r.u32()? as usize;
    let n = r.count(n, ENTRY_HEADER_BYTES)?;
    let mut entries = Vec::with_capacity(n);
    let mut expected = prev_index;
    for _ in 0..n {
        expected = expected
            .checked_add(1)
            .ok_or_else(|| r.error("entry index overflows"))?;
        let index = r.u64()?;
        if index != expected {
            return Err(r.error(format!("entry index {index}, expected {expected}")));
        }
        let term = r.u64()?;
        let kind = match r.u8()? {
            0 => PeerEntryKind::Normal,
            1 => PeerEntryKind::Membership,
            k => return Err(r.error(format!("entry kind {k}"))),
        };
        let data = r.bytes32()?;
        entries.push(PeerEntry {
            index,
            term,
            kind,
            data,
        });
    }
    Ok(PeerMessageKind::Append {
        prev_index,
        prev_term,
        entries,
        commit,
        read,
    })
}

/// Takes one whole peer message from the front of `buf`, if there is one: `frame::parse`
/// with the peer limit, then [`PeerMessage::decode`].
pub fn parse(
    buf: &mut BytesMut,
    max_payload: usize,
) -> Result<Option<PeerMessage>, PeerDecodeError> {
    match frame::parse(buf, max_payload)? {
        None => Ok(None),
        Some(f) => PeerMessage::decode(&f).map(Some),
    }
}

/// Which side of a connection sent an authentication frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The node that opened the connection (frame kind `Auth`).
    Dialer,
    /// The node that accepted it (frame kind `AuthOk`).
    Acceptor,
}

impl Role {
    /// The frame kind that carries this role's proof.
    pub fn kind(self) -> PeerKind {
        match self {
            Role::Dialer => PeerKind::Auth,
            Role::Acceptor => PeerKind::AuthOk,
        }
    }

    /// The byte that stands for this role in the proof's input.
    pub fn byte(self) -> u8 {
        match self {
            Role::Dialer => b'D',
            Role::Acceptor => b'A',
        }
    }
}

/// One side's proof that it knows the cluster secret (see `peer_quic.rs` for how it is
/// computed and why it is sound).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthFrame {
    /// Dialer or acceptor.
    pub role: Role,
    /// The sender's node id.
    pub from: u64,
    /// The node id the sender believes it talks to.
    pub to: u64,
    /// Random at each start of the sender's endpoint: a new incarnation tells the other side
    /// that the sender restarted, so its connections to the old process are dead.
    pub incarnation: u64,
    /// HMAC-SHA256 over the session and both ids.
    pub proof: [u8; PROOF_BYTES],
}

impl AuthFrame {
    /// Appends this frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        frame::encode(out, self.role.kind() as u16, 0, |b| {
            b.put_u8(PEER_VERSION);
            b.put_u64_le(self.from);
            b.put_u64_le(self.to);
            b.put_u64_le(self.incarnation);
            b.put_slice(&self.proof);
        });
    }

    /// Decodes a frame that must carry `role`'s proof.
    pub fn decode(f: &Frame, role: Role) -> Result<AuthFrame, PeerDecodeError> {
        if f.kind != role.kind() as u16 {
            return Err(PeerDecodeError::UnknownKind(f.kind));
        }
        if f.flags != 0 {
            return Err(PeerDecodeError::Flags(f.flags));
        }
        let mut r = Reader::new(f.payload.clone(), "peer authentication");
        let version = r.u8()?;
        if version != PEER_VERSION {
            return Err(PeerDecodeError::Version(version));
        }
        let (from, to, incarnation) = (r.u64()?, r.u64()?, r.u64()?);
        let mut proof = [0u8; PROOF_BYTES];
        proof.copy_from_slice(&r.take(PROOF_BYTES)?);
        r.finish()?;
        Ok(AuthFrame {
            role,
            from,
            to,
            incarnation,
            proof,
        })
    }
}

//! The image's bytes as an HTTP body: allocated data read from librbd in a blocking thread,
//! zero runs synthesised, with a bounded queue between reader and uploader so memory stays
//! bounded whatever the disk size and reads run ahead of the upload.
//!
//! Data chunks live in a fixed set of buffers allocated once per copy and handed back by the
//! uploader when it has sent them: the copy holds at most `BUFFERS × CHUNK` bytes, and the
//! allocator sees no per-chunk churn (which, with glibc, kept freed 4 MiB blocks resident).

use std::sync::mpsc as std_mpsc;

use bytes::Bytes;
use snapq_common::rbd::Pool;
use tokio::sync::mpsc;
use tracing::warn;

use super::extents::Extents;

/// Bytes per chunk: half a default RADOS object, so a few in flight keep memory small.
pub const CHUNK: usize = 2 * 1024 * 1024;
/// Chunks queued between the reader and the upload (zero runs cost no memory; data chunks
/// are bounded by `BUFFERS`).
pub const READ_AHEAD: usize = 4;
/// Data buffers per copy: one being read, the rest queued or being sent. The copy's memory
/// is CHUNK × this; reads still run ahead of Glance, which is the slower side.
pub const BUFFERS: usize = 3;

static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// The pieces of the image in order: `(offset, len, allocated)`, each at most CHUNK long.
pub fn pieces(extents: &Extents) -> impl Iterator<Item = (u64, usize, bool)> + '_ {
    let mut regions = extents.regions.iter().copied().peekable();
    let mut pos = 0u64;
    std::iter::from_fn(move || {
        if pos >= extents.size {
            return None;
        }
        while let Some(&(offset, len)) = regions.peek() {
            if offset + len <= pos {
                regions.next();
            } else {
                break;
            }
        }
        let (len, allocated) = match regions.peek() {
            Some(&(offset, len)) if offset <= pos => ((offset + len - pos), true),
            Some(&(offset, _)) => (offset - pos, false),
            None => (extents.size - pos, false),
        };
        let len = len.min(CHUNK as u64).min(extents.size - pos) as usize;
        let piece = (pos, len, allocated);
        pos += len as u64;
        Some(piece)
    })
}

/// A data chunk in one of the copy's buffers; dropping it (once sent) hands the buffer back.
struct Lent {
    buf: Vec<u8>,
    home: std_mpsc::SyncSender<Vec<u8>>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        // Fails only once the reader has stopped, when the buffer is simply freed.
        let _ = self.home.try_send(std::mem::take(&mut self.buf));
    }
}

/// A streaming body of the image `pool/disk@snapshot`.
pub fn body(pool: Pool, disk: String, snapshot: String, extents: Extents) -> reqwest::Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let image = match pool.open_read_only(&disk, Some(&snapshot)) {
            Ok(image) => image,
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                return;
            }
        };
        let (home, free) = std_mpsc::sync_channel::<Vec<u8>>(BUFFERS);
        for _ in 0..BUFFERS {
            // Empty until first used: a small copy never allocates all of them.
            let _ = home.try_send(Vec::new());
        }
        for (offset, len, allocated) in pieces(&extents) {
            let chunk = if allocated {
                // Every buffer not in `free` is queued or being sent, and comes back when
                // sent or when the upload drops it, so this wait always ends.
                let Ok(mut buf) = free.recv() else { return };
                buf.resize(len, 0);
                match image.read_at(offset, &mut buf) {
                    Ok(n) if n == len => Ok(Bytes::from_owner(Lent {
                        buf,
                        home: home.clone(),
                    })),
                    Ok(n) => Err(std::io::Error::other(format!(
                        "short read at {offset}: {n} of {len}"
                    ))),
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                }
            } else {
                Ok(Bytes::from_static(&ZEROS[..len]))
            };
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() {
                warn!("the upload stopped reading; abandoning the copy");
                return;
            }
            if failed {
                return;
            }
        }
    });
    reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: u64 = CHUNK as u64;

    #[test]
    fn pieces_cover_the_image_in_order_with_zero_runs_between_data() {
        let extents = Extents {
            size: 10 * C,
            regions: vec![(C, 3 * C / 2), (8 * C, 2 * C)],
        };
        let pieces: Vec<_> = pieces(&extents).collect();
        let mut pos = 0;
        for &(offset, len, _) in &pieces {
            assert_eq!(offset, pos, "contiguous");
            assert!(len > 0 && len <= CHUNK);
            pos += len as u64;
        }
        assert_eq!(pos, 10 * C, "covers the whole image");
        let data: u64 = pieces.iter().filter(|p| p.2).map(|p| p.1 as u64).sum();
        assert_eq!(data, 7 * C / 2, "reads exactly the allocated bytes");
        assert_eq!(pieces[0], (0, CHUNK, false));
        assert_eq!(pieces[1], (C, CHUNK, true));
        assert_eq!(pieces[2], (2 * C, CHUNK / 2, true));
        assert_eq!(pieces[3], (5 * C / 2, CHUNK, false));
    }

    #[test]
    fn an_empty_disk_is_all_zeros_and_a_full_one_all_data() {
        let size = 2 * C + C / 2;
        let empty = Extents {
            size,
            regions: vec![],
        };
        assert!(pieces(&empty).all(|p| !p.2));
        assert_eq!(pieces(&empty).map(|p| p.1 as u64).sum::<u64>(), size);
        let full = Extents {
            size,
            regions: vec![(0, size)],
        };
        assert!(pieces(&full).all(|p| p.2));
        assert_eq!(pieces(&full).count(), 3);
    }

    #[test]
    fn a_sent_chunk_hands_its_buffer_back() {
        let (home, free) = std_mpsc::sync_channel::<Vec<u8>>(1);
        let mut buf = Vec::with_capacity(CHUNK);
        buf.extend_from_slice(b"data");
        let chunk = Bytes::from_owner(Lent { buf, home });
        assert_eq!(&chunk[..], b"data");
        assert!(free.try_recv().is_err(), "lent out while the chunk lives");
        let copy = chunk.clone();
        drop(chunk);
        assert!(free.try_recv().is_err(), "still lent while a clone lives");
        drop(copy);
        let back = free.try_recv().expect("returned once sent");
        assert_eq!(back.capacity(), CHUNK, "the same allocation comes back");
    }
}

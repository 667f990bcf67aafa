//! Where a disk holds data, object by object (from the object map: no data is read).

use snapq_common::rbd::{Image, RbdError};

/// The allocated regions of an image, sorted, at RADOS-object granularity: at most one entry
/// per object, so memory stays small (a 1 TiB disk of 4 MiB objects: 262 144 entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extents {
    pub size: u64,
    pub regions: Vec<(u64, u64)>,
}

impl Extents {
    pub fn allocated_bytes(&self) -> u64 {
        self.regions.iter().map(|(_, len)| len).sum()
    }

    /// Adds a region, merging it with the previous one when they touch.
    fn push(&mut self, offset: u64, len: u64) {
        if let Some(last) = self.regions.last_mut() {
            if last.0 + last.1 == offset {
                last.1 += len;
                return;
            }
        }
        self.regions.push((offset, len));
    }
}

/// Lists the allocated regions of `image` (opened at the snapshot to copy).
pub fn allocated(image: &Image) -> Result<Extents, RbdError> {
    let mut extents = Extents {
        size: image.size()?,
        regions: Vec::new(),
    };
    let mut found = Vec::new();
    image.for_each_allocated_extent(true, &mut |offset, len| found.push((offset, len as u64)))?;
    found.sort_unstable();
    for (offset, len) in found {
        extents.push(offset, len);
    }
    Ok(extents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touching_regions_merge_and_bytes_add_up() {
        let mut e = Extents {
            size: 100,
            regions: vec![],
        };
        e.push(0, 10);
        e.push(10, 5);
        e.push(40, 10);
        assert_eq!(e.regions, vec![(0, 15), (40, 10)]);
        assert_eq!(e.allocated_bytes(), 25);
    }
}

//! The `devid-*` user properties of one PUBLISH, read in one pass over the broker's property
//! list and unlinked from it in place.

use std::ffi::{c_char, CStr};

use super::host::*;
use super::marshal::borrowed_str;

/// The `devid-*` user properties of one message: their name/value copies (made by
/// `mosquitto_property_read_string_pair`, freed on drop) and their nodes in the list.
pub(super) struct DevidProperties {
    /// (node, name, value); name and value are NUL-terminated mosquitto allocations.
    found: Vec<(*mut mosquitto_property, *mut c_char, *mut c_char)>,
}

impl DevidProperties {
    /// One pass over `list`. A pair whose name is not UTF-8 cannot be a `devid-*` name; one
    /// whose value is not UTF-8 is kept for stripping and passed on as an empty value (which
    /// no check accepts).
    ///
    /// # Safety
    /// `list` is NULL or a live property list that stays unchanged while `self` lives, except
    /// through `unlink_from`.
    pub(super) unsafe fn read(list: *mut mosquitto_property) -> DevidProperties {
        let mut found = Vec::new();
        let mut node = list;
        while !node.is_null() {
            // SAFETY: live node; reads this node only (skip_first false; the answer must be this
            // node); both strings are mosquitto-allocated copies, kept or freed below.
            unsafe {
                if mosquitto_property_identifier(node) == MQTT_PROP_USER_PROPERTY {
                    let mut name: *mut c_char = std::ptr::null_mut();
                    let mut value: *mut c_char = std::ptr::null_mut();
                    let hit = mosquitto_property_read_string_pair(
                        node,
                        MQTT_PROP_USER_PROPERTY,
                        &mut name,
                        &mut value,
                        false,
                    );
                    if hit == node
                        && !name.is_null()
                        && CStr::from_ptr(name).to_bytes().starts_with(b"devid-")
                    {
                        found.push((node, name, value));
                    } else {
                        mosquitto_free(name.cast());
                        mosquitto_free(value.cast());
                    }
                }
                node = mosquitto_property_next(node).cast_mut();
            }
        }
        DevidProperties { found }
    }

    /// (name, value) pairs borrowed from the copies.
    pub(super) fn pairs(&self) -> Vec<(&str, &str)> {
        self.found
            .iter()
            .filter_map(|&(_, name, value)| {
                // SAFETY: NUL-terminated copies owned by self (value may be NULL).
                let name = unsafe { borrowed_str(name) }?;
                let value = unsafe { borrowed_str(value) }.unwrap_or_default();
                Some((name, value))
            })
            .collect()
    }

    /// Unlinks the found nodes from the list and frees them.
    ///
    /// The list is Mosquitto's `struct mqtt5__property`, a singly linked list whose first field
    /// is `next` (lib/property_mosq.h, stable since 1.6); it is relinked in place and each
    /// removed node freed with the broker's own `mosquitto_property_free_all` on a one-node list.
    ///
    /// # Safety
    /// `head` is the list `read` walked, unchanged since.
    pub(super) unsafe fn unlink_from(&self, head: &mut *mut mosquitto_property) {
        if self.found.is_empty() {
            return;
        }
        let mut link: *mut *mut mosquitto_property = head;
        // SAFETY: every node comes from the broker's list; `next` is the first field.
        unsafe {
            while !(*link).is_null() {
                let node = *link;
                if self.found.iter().any(|&(n, _, _)| n == node) {
                    let next_field = node.cast::<*mut mosquitto_property>();
                    *link = *next_field;
                    *next_field = std::ptr::null_mut();
                    let mut single = node;
                    mosquitto_property_free_all(&mut single);
                } else {
                    link = node.cast::<*mut mosquitto_property>();
                }
            }
        }
    }
}

impl Drop for DevidProperties {
    fn drop(&mut self) {
        for &(_, name, value) in &self.found {
            // SAFETY: both were allocated by mosquitto for this struct (or are NULL), freed once.
            unsafe {
                mosquitto_free(name.cast());
                mosquitto_free(value.cast());
            }
        }
    }
}

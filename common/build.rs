// librbd and librados ship no pkg-config files on Debian 12: link them by name.
fn main() {
    println!("cargo:rustc-link-lib=rbd");
    println!("cargo:rustc-link-lib=rados");
}

# bench/lib.sh: shared by the builder benchmarks (sourced, not run).

# start_dockerd LOGDIR: starts the Docker engine unless one answers; sets
# DOCKERD_PID when it started one (the caller's cleanup kills it).
start_dockerd() {
    DOCKERD_PID=""
    if ! docker info >/dev/null 2>&1; then
        dockerd >"$1/dockerd.log" 2>&1 &
        DOCKERD_PID=$!
        for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
        docker info >/dev/null 2>&1 || { echo "dockerd did not start; see $1/dockerd.log" >&2; exit 1; }
    fi
}

# busybox_base_tar DIR: writes DIR/base.tar, a busybox-static root
# filesystem (the scenarios' `FROM BASE`; no network needed).
busybox_base_tar() {
    local d=$1
    mkdir -p "$d/rootfs/bin" "$d/rootfs/etc" "$d/rootfs/tmp"
    cp /bin/busybox "$d/rootfs/bin/"
    for a in $("$d/rootfs/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$d/rootfs/bin/$a"; done
    echo 'root:x:0:0:root:/root:/bin/sh' >"$d/rootfs/etc/passwd"
    echo 'root:x:0:' >"$d/rootfs/etc/group"
    chmod 1777 "$d/rootfs/tmp"
    tar -C "$d/rootfs" -cf "$d/base.tar" .
}

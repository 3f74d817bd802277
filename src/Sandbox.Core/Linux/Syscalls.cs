using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;
using static Tmds.Linux.LibC;

namespace Sandbox.Linux;

/// <summary>The few libc calls the parent side needs, each turning a failure into a <see cref="LinuxException"/>.</summary>
internal static unsafe partial class Syscalls
{
    public static uint RealUserId => getuid();

    /// <summary>The uid a peer sees through SO_PEERCRED (socket(7)), e.g. in D-Bus's EXTERNAL authentication.</summary>
    public static uint EffectiveUserId => geteuid();
    public static uint RealGroupId => getgid();

    public static bool IsTerminal(int fd) => isatty(fd) == 1;

    /// <summary>
    /// Whether <paramref name="fd"/> came from the program that started this one: open and not
    /// close-on-exec. execve(2) keeps only descriptors without FD_CLOEXEC, and everything this process
    /// opens itself is close-on-exec (.NET opens and dups with O_CLOEXEC and F_DUPFD_CLOEXEC, and so
    /// does this layer), so a standard descriptor that is open but close-on-exec is one of ours that
    /// took a number the caller had left closed: under the JIT, the runtime's internal pipe; under
    /// NativeAOT, Console's dup of another stream. Closed: null.
    /// </summary>
    public static bool? IsInherited(int fd)
    {
        int flags = fcntl(fd, F_GETFD);
        return flags < 0 ? null : (flags & FD_CLOEXEC) == 0;
    }

    /// <summary>
    /// Opens /dev/null at the closed descriptor <paramref name="fd"/>, read and write and inheritable,
    /// as a caller's <c>&lt; /dev/null &gt; /dev/null</c> would have (glibc does the same for fds 0 to 2
    /// of a set-user-ID program, csu/check_fds.c).
    /// </summary>
    public static void OpenNullAt(int fd)
    {
        int opened;
        fixed (byte* p = "/dev/null\0"u8)
            opened = open(p, O_RDWR, 0);
        if (opened < 0 || opened == fd)
            return;
        // A lower number was free: the caller left more than one closed. Put it where it belongs.
        dup2(opened, fd);
        close(opened);
    }

    /// <summary>access(2) W_OK with the real ids: what a delegated cgroup check needs (cgroups(7), "Delegation").</summary>
    public static bool CanWrite(string path)
    {
        byte[] bytes = NulTerminated(path);
        fixed (byte* p = bytes)
            return access(p, W_OK) == 0;
    }

    public static (int Major, int Minor) DeviceNumbers(string path)
    {
        byte[] bytes = NulTerminated(path);
        Tmds.Linux.stat st;
        fixed (byte* p = bytes)
        {
            if (stat(p, &st) != 0)
                throw new LinuxException("stat", path, errno);
        }
        uint mode = (uint)st.st_mode;
        if ((mode & 0xF000) != 0x6000 && (mode & 0xF000) != 0x2000)
            throw new LinuxException("not a device", path, Errno.EINVAL);
        return MajorMinor((ulong)st.st_rdev);
    }

    // gnu_dev_major/minor (sys/sysmacros.h)
    private static (int Major, int Minor) MajorMinor(ulong dev) =>
        ((int)(((dev >> 32) & 0xfffff000) | ((dev >> 8) & 0xfff)), (int)(((dev >> 12) & 0xffffff00) | (dev & 0xff)));

    /// <summary>
    /// What <paramref name="path"/> is, symlinks followed, in one stat(2): File.Exists and
    /// Directory.Exists together take two, each with the runtime's path handling around it.
    /// </summary>
    public static PathKind KindOf(string path)
    {
        byte[] bytes = NulTerminated(path);
        Tmds.Linux.stat st;
        fixed (byte* p = bytes)
        {
            if (stat(p, &st) != 0)
                return PathKind.Missing;
        }
        return ((uint)st.st_mode & 0xF000) == 0x4000 ? PathKind.Directory : PathKind.Other;
    }

    /// <summary>
    /// Which directory <paramref name="path"/> is, in one stat(2): its inode number and change time,
    /// which a directory removed and made again at the same path does not keep together (a freed
    /// inode number may be reused; its ctime is then the new directory's); null when it is not a directory.
    /// </summary>
    public static string? DirectoryIdentity(string path)
    {
        byte[] bytes = NulTerminated(path);
        Tmds.Linux.stat st;
        fixed (byte* p = bytes)
        {
            if (stat(p, &st) != 0 || ((uint)st.st_mode & 0xF000) != 0x4000)
                return null;
        }
        return string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{(ulong)st.st_ino}.{(long)st.st_ctim.tv_sec}.{(long)st.st_ctim.tv_nsec}");
    }

    /// <summary>
    /// A small file's text (a /proc or /sys value) in one open and read, without FileStream's
    /// machinery; null when it cannot be read. Longer files are cut at <paramref name="maxBytes"/>.
    /// </summary>
    public static string? TryReadSmallFile(string path, int maxBytes = 256)
    {
        byte[] bytes = NulTerminated(path);
        Span<byte> buffer = stackalloc byte[maxBytes];
        int fd;
        fixed (byte* p = bytes)
            fd = open(p, O_RDONLY | O_CLOEXEC, 0);
        if (fd < 0)
            return null;
        try
        {
            int total = 0;
            fixed (byte* b = buffer)
            {
                while (total < maxBytes)
                {
                    long n = read(fd, b + total, maxBytes - total);
                    if (n < 0 && errno == Errno.EINTR)
                        continue;
                    if (n < 0)
                        return null;
                    if (n == 0)
                        break;
                    total += (int)n;
                }
            }
            return Encoding.UTF8.GetString(buffer[..total]);
        }
        finally
        {
            close(fd);
        }
    }

    /// <summary>realpath(3): the canonical path of an existing file, every symlink resolved; null when it fails (a missing component, a loop).</summary>
    public static string? TryRealPath(string path)
    {
        byte[] bytes = NulTerminated(path);
        fixed (byte* p = bytes)
        {
            byte* resolved = realpath(p, null);
            if (resolved == null)
                return null;
            try
            {
                return Marshal.PtrToStringUTF8((IntPtr)resolved);
            }
            finally
            {
                NativeMemory.Free(resolved); // malloc'd by realpath: free(3)
            }
        }
    }

    [LibraryImport("libc", EntryPoint = "realpath")]
    private static partial byte* realpath(byte* path, byte* resolved);

    public static bool KillProcess(int pid, int signal) => kill(pid, signal) == 0;

    /// <summary>getppid(2): the parent's pid (changes when the parent dies and this process is re-parented).</summary>
    public static int ParentProcessId => getppid();

    /// <summary>lseek(2) to an absolute offset, or with <paramref name="fromCurrent"/> by one; the new offset, or -1.</summary>
    public static long Seek(int fd, long offset, bool fromCurrent = false) => lseek(fd, offset, fromCurrent ? SEEK_CUR : SEEK_SET);

    /// <summary>pread(2): bytes read at <paramref name="offset"/> (the descriptor's own offset unmoved), 0 at the end, or -errno.</summary>
    public static int ReadAt(int fd, Span<byte> buffer, long offset)
    {
        fixed (byte* b = buffer)
        {
            while (true)
            {
                long n = pread(fd, b, buffer.Length, offset);
                if (n >= 0)
                    return (int)n;
                int e = errno;
                if (e != Errno.EINTR)
                    return -e;
            }
        }
    }

    /// <summary>write(2) once: the bytes taken (a non-blocking pipe takes what fits), or -errno.</summary>
    public static int WriteSome(int fd, ReadOnlySpan<byte> data)
    {
        fixed (byte* d = data)
        {
            while (true)
            {
                long n = write(fd, d, data.Length);
                if (n >= 0)
                    return (int)n;
                int e = errno;
                if (e != Errno.EINTR)
                    return -e;
            }
        }
    }

    /// <summary>A second descriptor of the same open file, close-on-exec (F_DUPFD_CLOEXEC).</summary>
    public static SafeFileHandle Duplicate(SafeFileHandle handle)
    {
        int fd = fcntl((int)handle.DangerousGetHandle(), F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
            throw new LinuxException("fcntl", null, errno);
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>Sets O_NONBLOCK on a descriptor of ours.</summary>
    public static void SetNonBlocking(SafeFileHandle handle)
    {
        int fd = (int)handle.DangerousGetHandle();
        int flags = fcntl(fd, F_GETFL, 0);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
            throw new LinuxException("fcntl", null, errno);
    }

    /// <summary>Whether a process with this id exists in our PID namespace (kill(2) with signal 0: ESRCH when none; EPERM is another user's).</summary>
    public static bool ProcessExists(int pid) => pid > 0 && (kill(pid, 0) == 0 || errno != Errno.ESRCH);

    /// <summary>F_SETPIPE_SZ (fcntl(2)); a refusal (above fs.pipe-max-size) keeps the default size.</summary>
    public static bool TryGrowPipe(SafeFileHandle pipe, int bytes) =>
        fcntl((int)pipe.DangerousGetHandle(), 1031 /* F_SETPIPE_SZ */, bytes) >= 0;

    /// <summary>A close-on-exec pipe: nothing created here can leak into an unrelated child.</summary>
    public static (SafeFileHandle Read, SafeFileHandle Write) CreatePipe()
    {
        int* fds = stackalloc int[2];
        if (pipe2(fds, O_CLOEXEC) != 0)
            throw new LinuxException("pipe2", null, errno);
        return (new SafeFileHandle((IntPtr)fds[0], ownsHandle: true), new SafeFileHandle((IntPtr)fds[1], ownsHandle: true));
    }

    public static SafeFileHandle OpenReadOnly(string path) => Open(path, O_RDONLY);

    public static SafeFileHandle OpenWriteOnly(string path) => Open(path, O_WRONLY);

    /// <summary>What an open descriptor is, as far as relaying output to it goes.</summary>
    public static DescriptorKind KindOfDescriptor(SafeFileHandle handle)
    {
        Tmds.Linux.stat st;
        if (fstat((int)handle.DangerousGetHandle(), &st) != 0)
            return DescriptorKind.Other;
        return ((uint)st.st_mode & 0xF000) switch
        {
            // The null device is character device 1:3 (devices.txt in the kernel's admin guide), however it was opened.
            0x2000 when MajorMinor((ulong)st.st_rdev) == (1, 3) => DescriptorKind.NullDevice,
            // An anonymous pipe only: a named FIFO is an inode of a host file system, which root
            // inside (its owner's id) could chmod or chown through the descriptor.
            0x1000 when IsAnonymousPipe((int)handle.DangerousGetHandle()) => DescriptorKind.Pipe,
            0x8000 => DescriptorKind.RegularFile,
            _ => DescriptorKind.Other,
        };
    }

    [LibraryImport("libc", EntryPoint = "fstatfs", SetLastError = true)]
    private static partial int fstatfs_(int fd, byte* buffer);

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long syscall_kcmp(long number, int pid1, int pid2, int type, nint fd1, nint fd2);

    /// <summary>
    /// Whether two descriptors of this process are one open file description (`cmd &gt; log 2&gt;&amp;1`,
    /// a terminal both streams inherited): kcmp(2) KCMP_FILE. Where kcmp is missing (CONFIG_KCMP off)
    /// or refused, two descriptors of one character device (a terminal) count as one, and nothing else.
    /// </summary>
    public static bool IsSameOpenFile(SafeFileHandle a, SafeFileHandle b)
    {
        long number = System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture switch
        {
            System.Runtime.InteropServices.Architecture.X64 => 312,
            System.Runtime.InteropServices.Architecture.Arm64 => 272,
            _ => -1,
        };
        int pid = Environment.ProcessId;
        if (number > 0)
        {
            long same = syscall_kcmp(number, pid, pid, 0 /* KCMP_FILE */, a.DangerousGetHandle(), b.DangerousGetHandle());
            if (same >= 0)
                return same == 0;
        }
        Tmds.Linux.stat sa, sb;
        return fstat((int)a.DangerousGetHandle(), &sa) == 0 && fstat((int)b.DangerousGetHandle(), &sb) == 0
            && ((uint)sa.st_mode & 0xF000) == 0x2000 && ((uint)sb.st_mode & 0xF000) == 0x2000 && sa.st_rdev == sb.st_rdev;
    }

    /// <summary>
    /// Whether a FIFO descriptor is an anonymous pipe: its file system is pipefs (PIPEFS_MAGIC,
    /// include/uapi/linux/magic.h); a named FIFO's is the host file system it was made in. One
    /// fstatfs(2), on the warm-start path (a readlink of /proc/self/fd/N would cost a /proc lookup).
    /// </summary>
    private static bool IsAnonymousPipe(int fd)
    {
        // struct statfs: 120 bytes on x86_64 and aarch64, f_type (a long) first.
        long* buffer = stackalloc long[16];
        return fstatfs_(fd, (byte*)buffer) == 0 && buffer[0] == 0x50495045;
    }

    /// <summary>
    /// A new open file description for writing to the same pipe: open(2) of /proc/self/fd/N. For an
    /// anonymous pipe that never waits (fs/pipe.c, fifo_open); for a named FIFO without a reader,
    /// O_NONBLOCK makes it fail with ENXIO instead of waiting for one (fifo(7)); the flag is cleared
    /// afterwards. Null when it fails.
    /// </summary>
    public static SafeFileHandle? TryReopenPipeForWriting(SafeFileHandle pipe)
    {
        byte[] path = NulTerminated($"/proc/self/fd/{(int)pipe.DangerousGetHandle()}");
        int fd;
        fixed (byte* p = path)
            fd = open(p, O_WRONLY | O_NONBLOCK | O_CLOEXEC, 0);
        if (fd < 0)
            return null;
        int flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
        {
            close(fd);
            return null;
        }
        return new SafeFileHandle((IntPtr)fd, ownsHandle: true);
    }

    /// <summary>An O_PATH descriptor: enough to execveat(2) the file, nothing to read or write it with.</summary>
    public static SafeFileHandle OpenPath(string path) => Open(path, O_PATH);

    /// <summary>open(2), always close-on-exec: nothing opened here can leak into a child.</summary>
    private static SafeFileHandle Open(string path, int flags)
    {
        byte[] bytes = NulTerminated(path);
        fixed (byte* p = bytes)
        {
            int fd = open(p, flags | O_CLOEXEC, 0);
            if (fd < 0)
                throw new LinuxException("open", path, errno);
            return new SafeFileHandle((IntPtr)fd, ownsHandle: true);
        }
    }

    /// <summary>
    /// Writes <paramref name="text"/> to an existing file in one write(2): /proc/PID/uid_map accepts
    /// exactly one write (user_namespaces(7), "Defining user and group ID mappings").
    /// </summary>
    public static void WriteFileOnce(string path, string text)
    {
        byte[] pathBytes = NulTerminated(path);
        byte[] data = Encoding.UTF8.GetBytes(text);
        fixed (byte* p = pathBytes)
        fixed (byte* d = data)
        {
            int fd = open(p, O_WRONLY | O_CLOEXEC, 0);
            if (fd < 0)
                throw new LinuxException("open", path, errno);
            try
            {
                long n = write(fd, d, data.Length);
                if (n < 0)
                    throw new LinuxException("write", path, errno);
                if (n != data.Length)
                    throw new LinuxException("write (short)", path, Errno.EIO);
            }
            finally
            {
                close(fd);
            }
        }
    }

    /// <summary>Writes a single byte to a pipe; false when the reader is gone.</summary>
    public static bool WriteByte(SafeFileHandle handle, byte value) => TryWrite(handle, [value]);

    /// <summary>One write(2) of all of <paramref name="bytes"/> (a datagram on a SOCK_SEQPACKET socket), retried on EINTR; false when it was not written whole.</summary>
    public static bool TryWrite(SafeFileHandle handle, ReadOnlySpan<byte> bytes)
    {
        int fd = (int)handle.DangerousGetHandle();
        long n;
        fixed (byte* b = bytes)
        {
            do
                n = write(fd, b, bytes.Length);
            while (n < 0 && errno == Errno.EINTR);
        }
        return n == bytes.Length;
    }

    public static int Read(SafeFileHandle handle, Span<byte> buffer)
    {
        int n = TryRead((int)handle.DangerousGetHandle(), buffer);
        return n >= 0 ? n : throw new LinuxException("read", null, -n);
    }

    /// <summary>read(2), retried on EINTR: the bytes read, or -errno (-EAGAIN from a non-blocking descriptor with nothing to read).</summary>
    public static int TryRead(int fd, Span<byte> buffer)
    {
        fixed (byte* b = buffer)
        {
            long n;
            do
                n = read(fd, b, buffer.Length);
            while (n < 0 && errno == Errno.EINTR);
            return n < 0 ? -errno : (int)n;
        }
    }

    internal static byte[] NulTerminated(string s)
    {
        byte[] bytes = new byte[Encoding.UTF8.GetByteCount(s) + 1];
        Encoding.UTF8.GetBytes(s, bytes);
        return bytes;
    }
}

/// <summary>What a path names, for <see cref="Syscalls.KindOf"/>.</summary>
internal enum PathKind
{
    Missing,
    Directory,
    /// <summary>A regular file, device, socket or fifo: what File.Exists also reports.</summary>
    Other,
}

/// <summary>What <see cref="Syscalls.KindOfDescriptor"/> tells apart.</summary>
internal enum DescriptorKind
{
    Other,
    NullDevice,
    /// <summary>A pipe or FIFO.</summary>
    Pipe,
    /// <summary>A regular file (seekable: its offset is shared with whoever opened it, the caller's shell).</summary>
    RegularFile,
}

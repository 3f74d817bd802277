namespace Sandbox.Linux;

/// <summary>
/// A failed system call: which operation, on which path, and the errno (youki's error shape). Only the
/// Linux layer throws it; the layers above translate it into a <see cref="SandboxException"/>, and a
/// front end reports one that got past them as a failure of the run (exit 125), not a crash.
/// </summary>
public sealed class LinuxException : Exception
{
    public LinuxException(string operation, string? path, int errno)
        : base(Format(operation, path, errno))
    {
        Operation = operation;
        Path = path;
        Errno = errno;
    }

    public string Operation { get; }
    public string? Path { get; }
    public int Errno { get; }

    private static string Format(string operation, string? path, int errno) =>
        path is null ? $"{operation}: {Linux.Errno.Describe(errno)}" : $"{operation} {path}: {Linux.Errno.Describe(errno)}";
}

/// <summary>errno values this project reacts to, and their names for messages.</summary>
internal static class Errno
{
    public const int EPERM = 1;
    public const int ENOENT = 2;
    public const int ESRCH = 3;
    public const int EINTR = 4;
    public const int EIO = 5;
    public const int E2BIG = 7;
    public const int ENOEXEC = 8;
    public const int EBADF = 9;
    public const int EAGAIN = 11;
    public const int ENOMEM = 12;
    public const int ENODEV = 19;
    public const int EACCES = 13;
    public const int EBUSY = 16;
    public const int EEXIST = 17;
    public const int EXDEV = 18;
    public const int ENOTDIR = 20;
    public const int EISDIR = 21;
    public const int EINVAL = 22;
    public const int ENFILE = 23;
    public const int EMFILE = 24;
    public const int ETXTBSY = 26;
    public const int EFBIG = 27;
    public const int ENOSPC = 28;
    public const int EROFS = 30;
    public const int EPIPE = 32;
    public const int ELOOP = 40;
    public const int ENAMETOOLONG = 36;
    public const int ENOSYS = 38;
    public const int ENOTEMPTY = 39;
    public const int EUSERS = 87;
    public const int ESTALE = 116;
    public const int EDQUOT = 122;

    private static readonly Dictionary<int, (string Name, string Text)> s_known = new()
    {
        [EPERM] = ("EPERM", "Operation not permitted"),
        [ENOENT] = ("ENOENT", "No such file or directory"),
        [ESRCH] = ("ESRCH", "No such process"),
        [EINTR] = ("EINTR", "Interrupted system call"),
        [EIO] = ("EIO", "Input/output error"),
        [E2BIG] = ("E2BIG", "Argument list too long"),
        [ENOEXEC] = ("ENOEXEC", "Exec format error"),
        [EBADF] = ("EBADF", "Bad file descriptor"),
        [EAGAIN] = ("EAGAIN", "Resource temporarily unavailable"),
        [ENOMEM] = ("ENOMEM", "Cannot allocate memory"),
        [ENODEV] = ("ENODEV", "No such device"),
        [EACCES] = ("EACCES", "Permission denied"),
        [EBUSY] = ("EBUSY", "Device or resource busy"),
        [EEXIST] = ("EEXIST", "File exists"),
        [EXDEV] = ("EXDEV", "Invalid cross-device link"),
        [ENOTDIR] = ("ENOTDIR", "Not a directory"),
        [EISDIR] = ("EISDIR", "Is a directory"),
        [EINVAL] = ("EINVAL", "Invalid argument"),
        [ENFILE] = ("ENFILE", "Too many open files in system"),
        // The one a user can fix at once: say how (getrlimit(2), RLIMIT_NOFILE).
        [EMFILE] = ("EMFILE", "Too many open files: raise the limit with ulimit -n"),
        [ETXTBSY] = ("ETXTBSY", "Text file busy"),
        [EFBIG] = ("EFBIG", "File too large"),
        [ENOSPC] = ("ENOSPC", "No space left on device"),
        [EROFS] = ("EROFS", "Read-only file system"),
        [EPIPE] = ("EPIPE", "Broken pipe"),
        [ELOOP] = ("ELOOP", "Too many levels of symbolic links"),
        [ENAMETOOLONG] = ("ENAMETOOLONG", "File name too long"),
        [ENOSYS] = ("ENOSYS", "Function not implemented"),
        [ENOTEMPTY] = ("ENOTEMPTY", "Directory not empty"),
        [EUSERS] = ("EUSERS", "Too many users"),
        [ESTALE] = ("ESTALE", "Stale file handle"),
        [EDQUOT] = ("EDQUOT", "Disk quota exceeded"),
    };

    public static string Name(int errno) => s_known.TryGetValue(errno, out var e) ? e.Name : $"errno {errno}";

    public static string Describe(int errno) =>
        s_known.TryGetValue(errno, out var e) ? $"{e.Text} ({e.Name})" : $"errno {errno}";
}

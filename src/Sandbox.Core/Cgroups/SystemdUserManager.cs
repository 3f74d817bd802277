using System.Collections.Concurrent;
using System.Globalization;
using Tmds.DBus.Protocol;

namespace Sandbox.Cgroups;

/// <summary>
/// A systemd user manager (systemd --user) as the cgroup code needs it: something that can put this
/// process into a transient scope with Delegate=yes. An interface so that the decisions around it
/// (when to ask, what to do with the answer) are unit-tested without a running systemd.
/// </summary>
public interface ISystemdUserManager
{
    /// <summary>
    /// Starts a transient scope holding <paramref name="pid"/>, with Delegate=yes, and waits until
    /// systemd's job for it has finished. Returns the scope's unit name and where the manager was reached.
    /// </summary>
    /// <exception cref="SystemdUnavailableException">No manager could be reached, or it refused.</exception>
    SystemdScope StartDelegatedScope(int pid, TimeSpan timeout);
}

/// <summary>A scope systemd started for us: its unit name (the last component of its cgroup path) and the bus it came through.</summary>
public sealed record SystemdScope(string UnitName, string Via);

/// <summary>One place a user manager was looked for, and why it did not give a scope there.</summary>
public sealed record SystemdAttempt(string Where, string Error)
{
    public override string ToString() => $"{Where}: {Error}";
}

/// <summary>No systemd user manager gave a delegated scope; <see cref="Attempts"/> says where it was looked for and what happened.</summary>
public sealed class SystemdUnavailableException : Exception
{
    public SystemdUnavailableException(IReadOnlyList<SystemdAttempt> attempts)
        : base("no systemd user manager gave a delegated scope (" + string.Join("; ", attempts) + ")")
    {
        Attempts = attempts;
    }

    public IReadOnlyList<SystemdAttempt> Attempts { get; }
}

/// <summary>A D-Bus address to try, and how to name it in messages.</summary>
/// <param name="Address">A D-Bus address (dbus-specification, "Server Addresses").</param>
/// <param name="Display">What to call it in a message.</param>
/// <param name="SocketPath">The unix socket behind it when known: a missing one is reported without connecting.</param>
/// <param name="Direct">A peer-to-peer connection to the manager itself (its private socket, served by sd-bus), not a bus.</param>
public sealed record SystemdEndpoint(string Address, string Display, string? SocketPath, bool Direct = false);

/// <summary>
/// The real user manager, over D-Bus (org.freedesktop.systemd1(5)). It is looked for where sd-bus's
/// sd_bus_default_user() looks (crun) and where go-systemd's user connection looks (podman):
/// $DBUS_SESSION_BUS_ADDRESS, else the user bus $XDG_RUNTIME_DIR/bus; then, as `systemctl --user`
/// does, at the manager's own private socket $XDG_RUNTIME_DIR/systemd/private, which works without
/// a user bus (no dbus-user-session installed). Nothing is opened until a scope is asked for.
/// </summary>
public sealed class SystemdUserManager : ISystemdUserManager
{
    private const string Service = "org.freedesktop.systemd1";
    private const string ObjectPath = "/org/freedesktop/systemd1";
    private const string ManagerInterface = "org.freedesktop.systemd1.Manager";

    private readonly Func<IReadOnlyList<SystemdEndpoint>> _endpoints;

    public SystemdUserManager(Func<IReadOnlyList<SystemdEndpoint>> endpoints)
    {
        _endpoints = endpoints;
    }

    /// <summary>The current user's manager, found through this process's environment.</summary>
    public static SystemdUserManager ForCurrentUser() =>
        new(() => Endpoints(Environment.GetEnvironmentVariable, Linux.Syscalls.RealUserId));

    /// <summary>
    /// Where to look, in order, without duplicates. $XDG_RUNTIME_DIR unset (a CI service, a cron job)
    /// falls back to /run/user/UID, which pam_systemd would have set it to (podman does the same).
    /// </summary>
    public static IReadOnlyList<SystemdEndpoint> Endpoints(Func<string, string?> environment, uint uid)
    {
        var list = new List<SystemdEndpoint>();
        if (environment("DBUS_SESSION_BUS_ADDRESS") is { Length: > 0 } session)
            list.Add(new SystemdEndpoint(session, $"$DBUS_SESSION_BUS_ADDRESS={session}", UnixPath(session)));
        string runtime = environment("XDG_RUNTIME_DIR") is { Length: > 0 } r ? r.TrimEnd('/') : $"/run/user/{uid.ToString(CultureInfo.InvariantCulture)}";
        string bus = runtime + "/bus";
        if (!list.Any(e => e.SocketPath == bus))
            list.Add(new SystemdEndpoint("unix:path=" + bus, $"the user bus {bus}", bus));
        string priv = runtime + "/systemd/private";
        list.Add(new SystemdEndpoint("unix:path=" + priv, $"the manager's private socket {priv}", priv, Direct: true));
        return list;
    }

    /// <summary>The socket of a single "unix:path=..." address (the common case), else null.</summary>
    internal static string? UnixPath(string address)
    {
        if (address.Contains(';') || !address.StartsWith("unix:", StringComparison.Ordinal))
            return null;
        foreach (string pair in address["unix:".Length..].Split(','))
        {
            if (pair.StartsWith("path=", StringComparison.Ordinal) && !pair.Contains('%'))
                return pair["path=".Length..];
        }
        return null;
    }

    /// <summary>
    /// The unit's name: systemd.unit(5) allows [A-Za-z0-9:_.\-] and "\x"; the pid says whose it is, the
    /// random part keeps a recycled pid from meeting a scope that has not been collected yet.
    /// </summary>
    public static string NewScopeName(int pid) =>
        $"sandbox-{pid.ToString(CultureInfo.InvariantCulture)}-{Random.Shared.Next():x8}.scope";

    /// <summary>Whether a unit name is one <see cref="NewScopeName"/> gives.</summary>
    public static bool IsSandboxScopeName(string unit) =>
        unit.StartsWith("sandbox-", StringComparison.Ordinal) && unit.EndsWith(".scope", StringComparison.Ordinal);

    /// <summary>
    /// Properties systemd may not know (OOMPolicy= on scopes: v253; CollectMode=: v236). It answers an
    /// unknown one with "Cannot set property NAME, or unknown property." (crun retries without it too).
    /// </summary>
    internal static readonly string[] OptionalProperties = ["OOMPolicy", "CollectMode"];

    /// <summary>The property named by systemd's "Cannot set property NAME, ..." error, or null.</summary>
    internal static string? RejectedProperty(string? errorMessage)
    {
        const string Prefix = "Cannot set property ";
        if (errorMessage is null || !errorMessage.StartsWith(Prefix, StringComparison.Ordinal))
            return null;
        string rest = errorMessage[Prefix.Length..];
        int end = rest.IndexOfAny([',', ' ']);
        return end > 0 ? rest[..end] : null;
    }

    public SystemdScope StartDelegatedScope(int pid, TimeSpan timeout)
    {
        var attempts = new List<SystemdAttempt>();
        var deadline = DateTime.UtcNow + timeout;
        foreach (SystemdEndpoint endpoint in _endpoints())
        {
            if (endpoint.SocketPath is string socket && !File.Exists(socket))
            {
                attempts.Add(new SystemdAttempt(endpoint.Display, "no such socket"));
                continue;
            }
            TimeSpan left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero)
            {
                attempts.Add(new SystemdAttempt(endpoint.Display, "not tried: out of time"));
                continue;
            }
            try
            {
                // Off the caller's context: the library completes its work on the thread pool.
                string unit = Task.Run(() => StartAsync(endpoint, pid, left)).GetAwaiter().GetResult();
                return new SystemdScope(unit, endpoint.Display);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                attempts.Add(new SystemdAttempt(endpoint.Display, Describe(e)));
            }
        }
        throw new SystemdUnavailableException(attempts);
    }

    private static string Describe(Exception e) => e switch
    {
        TimeoutException => "no answer in time",
        DBusErrorReplyException d => $"{d.ErrorMessage} ({d.ErrorName})",
        AggregateException { InnerException: Exception inner } => Describe(inner),
        _ when e.InnerException is System.Net.Sockets.SocketException s => s.Message,
        _ => e.Message,
    };

    private static async Task<string> StartAsync(SystemdEndpoint endpoint, int pid, TimeSpan timeout)
    {
        using var connection = new DBusConnection(endpoint.Direct && endpoint.SocketPath is string socket
            ? new DirectConnectionOptions(socket)
            : new DBusConnectionOptions(endpoint.Address));
        using var cancel = new CancellationTokenSource(timeout);
        await connection.ConnectAsync().AsTask().WaitAsync(timeout).ConfigureAwait(false);

        // JobRemoved(u id, o job, s unit, s result) tells when the start job has finished and how:
        // watched before the call, so that it cannot be missed. Not filtered on the sender: over the
        // private socket there is none, and on a bus only systemd emits this signal on its own path.
        var finished = new ConcurrentDictionary<string, string>(StringComparer.Ordinal);
        var anyFinished = new SemaphoreSlim(0);
        using IDisposable watch = await connection.WatchSignalAsync(
            sender: null, path: ObjectPath, @interface: ManagerInterface, signal: "JobRemoved",
            reader: static (Message message, object? _) =>
            {
                Reader body = message.GetBodyReader();
                body.ReadUInt32();
                string job = body.ReadObjectPathAsString();
                body.ReadString();
                return (Job: job, Result: body.ReadString());
            },
            handler: new Action<Notification<(string Job, string Result)>>(n =>
            {
                if (n.HasValue)
                {
                    finished[n.Value.Job] = n.Value.Result;
                    anyFinished.Release();
                }
            }),
            flags: ObserverFlags.None, emitOnCapturedContext: false).AsTask().WaitAsync(timeout).ConfigureAwait(false);

        var properties = new List<string>(OptionalProperties);
        while (true)
        {
            string unit = NewScopeName(pid);
            string job;
            try
            {
                job = await connection.CallMethodAsync(
                    StartTransientUnit(connection, unit, pid, properties),
                    static (Message message, object? _) => message.GetBodyReader().ReadObjectPathAsString()).WaitAsync(cancel.Token).ConfigureAwait(false);
            }
            catch (DBusErrorReplyException e) when (RejectedProperty(e.ErrorMessage) is string rejected && properties.Remove(rejected))
            {
                continue; // an older systemd: again without it
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException();
            }

            string? result;
            while (!finished.TryGetValue(job, out result))
            {
                try
                {
                    await anyFinished.WaitAsync(cancel.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    throw new TimeoutException();
                }
            }
            // systemd.job results: done, canceled, timeout, failed, dependency, skipped.
            if (result != "done")
                throw new InvalidOperationException($"systemd's job to start {unit} ended with '{result}'");
            return unit;
        }
    }

    /// <summary>
    /// StartTransientUnit(s name, s mode, a(sv) properties, a(sa(sv)) aux) — org.freedesktop.systemd1(5).
    /// Delegate=yes hands the scope's subtree to us (systemd chowns it to the user and stays out of it,
    /// the "single writer" rule of systemd's CGROUP_DELEGATION.md); PIDs moves this process in (a user
    /// manager asks the system manager to do it when the source cgroup, a login session's scope, is
    /// not its own). OOMPolicy=continue: an OOM kill inside a sandbox must not stop the scope and with
    /// it the supervisor (systemd 253+ stops scopes on OOM by default). CollectMode: a failed scope is
    /// still garbage-collected.
    /// </summary>
    private static MessageBuffer StartTransientUnit(DBusConnection connection, string unit, int pid, List<string> optional)
    {
        using MessageWriter writer = connection.GetMessageWriter();
        // NoAutoStart: a session bus without systemd on it (dbus-launch's) answers ServiceUnknown at
        // once instead of trying to activate org.freedesktop.systemd1 (systemd ships a /bin/false stub).
        writer.WriteMethodCallHeader(
            destination: Service, path: ObjectPath, @interface: ManagerInterface,
            member: "StartTransientUnit", signature: "ssa(sv)a(sa(sv))", flags: MessageFlags.NoAutoStart);
        writer.WriteString(unit);
        writer.WriteString("fail");
        ArrayStart properties = writer.WriteArrayStart(DBusType.Struct);
        writer.WriteStructureStart();
        writer.WriteString("Description");
        writer.WriteVariantString($"sandbox: delegated cgroup for the sandboxes of pid {pid.ToString(CultureInfo.InvariantCulture)}");
        writer.WriteStructureStart();
        writer.WriteString("PIDs");
        writer.WriteVariant(VariantValue.Array(new uint[] { (uint)pid }));
        writer.WriteStructureStart();
        writer.WriteString("Delegate");
        writer.WriteVariantBool(true);
        if (optional.Contains("OOMPolicy"))
        {
            writer.WriteStructureStart();
            writer.WriteString("OOMPolicy");
            writer.WriteVariantString("continue");
        }
        if (optional.Contains("CollectMode"))
        {
            writer.WriteStructureStart();
            writer.WriteString("CollectMode");
            writer.WriteVariantString("inactive-or-failed");
        }
        writer.WriteArrayEnd(properties);
        ArrayStart aux = writer.WriteArrayStart(DBusType.Struct);
        writer.WriteArrayEnd(aux);
        return writer.CreateMessage();
    }
}

/// <summary>
/// A connection to systemd's private socket through <see cref="BeginWithAuthStream"/>. EXTERNAL
/// authentication needs the uid (the library would otherwise try ANONYMOUS, which systemd refuses).
/// </summary>
internal sealed class DirectConnectionOptions(string socketPath) : DBusConnectionOptions
{
    protected override async ValueTask<SetupResult> SetupAsync(CancellationToken cancellationToken)
    {
        var socket = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new System.Net.Sockets.UnixDomainSocketEndPoint(socketPath), cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        return new SetupResult
        {
            ConnectionStream = new BeginWithAuthStream(new System.Net.Sockets.NetworkStream(socket, ownsSocket: true)),
            UserId = Linux.Syscalls.EffectiveUserId.ToString(CultureInfo.InvariantCulture),
        };
    }
}

/// <summary>
/// Sends the authentication's BEGIN together with the AUTH line, as sd-bus's own clients do, and drops
/// the library's later BEGIN. systemd's sd-bus server (seen with systemd 252) leaves a complete
/// message that arrived in the same read as BEGIN unprocessed until more bytes come; the library sends
/// Hello right after BEGIN and waits for its answer, so the connection hung whenever the two were read
/// together (2 runs in 15, NativeAOT). Sent early, BEGIN is handled before the server answers OK, and
/// the first message can only follow that answer.
/// </summary>
internal sealed class BeginWithAuthStream(Stream inner) : Stream
{
    private static readonly byte[] Begin = "BEGIN\r\n"u8.ToArray();

    // 0: nothing sent early yet; 1: BEGIN sent with AUTH, the library's own still to come; 2: pass-through
    private int _state;

    private ReadOnlyMemory<byte> Rewrite(ReadOnlyMemory<byte> buffer, out bool drop)
    {
        drop = false;
        if (_state == 0 && buffer.Span.StartsWith("AUTH "u8))
        {
            _state = 1;
            var combined = new byte[buffer.Length + Begin.Length];
            buffer.CopyTo(combined);
            Begin.CopyTo(combined, buffer.Length);
            return combined;
        }
        if (_state == 1 && buffer.Span.SequenceEqual(Begin))
        {
            _state = 2;
            drop = true;
        }
        return buffer;
    }

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        ReadOnlyMemory<byte> data = Rewrite(buffer, out bool drop);
        return drop ? ValueTask.CompletedTask : inner.WriteAsync(data, cancellationToken);
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        ReadOnlyMemory<byte> data = Rewrite(buffer.ToArray(), out bool drop);
        if (!drop)
            inner.Write(data.Span);
    }

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => inner.ReadAsync(buffer, cancellationToken);

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => inner.ReadAsync(buffer, offset, count, cancellationToken);

    public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, count);

    public override void Flush() => inner.Flush();

    public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);

    public override bool CanRead => true;

    public override bool CanWrite => true;

    public override bool CanSeek => false;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
            inner.Dispose();
        base.Dispose(disposing);
    }
}

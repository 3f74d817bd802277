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
public sealed record SystemdEndpoint(string Address, string Display, string? SocketPath);

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
        list.Add(new SystemdEndpoint("unix:path=" + priv, $"the manager's private socket {priv}", priv));
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
                string unit = Task.Run(() => StartAsync(endpoint.Address, pid, left)).GetAwaiter().GetResult();
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

    private static async Task<string> StartAsync(string address, int pid, TimeSpan timeout)
    {
        using var connection = new DBusConnection(new DBusConnectionOptions(address));
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

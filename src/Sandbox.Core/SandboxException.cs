namespace Sandbox;

/// <summary>Stable error codes (SBX###): front ends show them, scripts and the MSBuild task match on them.</summary>
public enum SandboxErrorCode
{
    InvalidSpec = 1,
    UserNamespacesUnavailable = 2,
    IdMappingFailed = 3,
    SetupFailed = 4,
    CommandNotFound = 5,
    CommandNotExecutable = 6,
    WorkingDirectoryUnavailable = 7,
    NativeExecutorUnavailable = 8,
    SpawnFailed = 9,
    CgroupFailed = 10,
    LimitsUnavailable = 11,
    Internal = 99,
}

public static class SandboxErrorCodes
{
    public static string Format(this SandboxErrorCode code) => $"SBX{(int)code:000}";

    /// <summary>The process exit code for a failure, following docker and podman: 125 the sandbox could not be set up, 126 not executable, 127 not found.</summary>
    public static int ExitCode(this SandboxErrorCode code) => code switch
    {
        SandboxErrorCode.CommandNotFound => ExitCodes.CommandNotFound,
        SandboxErrorCode.CommandNotExecutable => ExitCodes.CommandNotExecutable,
        _ => ExitCodes.SandboxFailed,
    };
}

public static class ExitCodes
{
    public const int Timeout = 124;
    public const int SandboxFailed = 125;
    public const int CommandNotExecutable = 126;
    public const int CommandNotFound = 127;
    public const int SignalBase = 128;
}

/// <summary>The sandbox could not run the command: the message names the cause and, where it lies in the host, the fix.</summary>
public sealed class SandboxException : Exception
{
    public SandboxException(SandboxErrorCode code, string message, Exception? inner = null)
        : base(message, inner)
    {
        Code = code;
    }

    public SandboxErrorCode Code { get; }

    public int ExitCode => Code.ExitCode();
}

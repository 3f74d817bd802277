using System.Collections;
using Microsoft.Build.Framework;

namespace Sandbox.Tests.MSBuild;

/// <summary>An MSBuild engine that records what a task logs.</summary>
internal sealed class FakeBuildEngine : IBuildEngine
{
    private readonly object _gate = new();

    public List<BuildErrorEventArgs> Errors { get; } = [];
    public List<BuildWarningEventArgs> Warnings { get; } = [];
    public List<BuildMessageEventArgs> Messages { get; } = [];

    /// <summary>Everything, in order, one line each: "error CODE file(line,col): text", "warning ...", "high|normal|low: text".</summary>
    public List<string> Log { get; } = [];

    public bool ContinueOnError => false;
    public int LineNumberOfTaskNode => 0;
    public int ColumnNumberOfTaskNode => 0;
    public string ProjectFileOfTaskNode => "/project/Test.csproj";

    public bool BuildProjectFile(string projectFileName, string[] targetNames, IDictionary globalProperties, IDictionary targetOutputs) =>
        throw new NotSupportedException();

    public void LogCustomEvent(CustomBuildEventArgs e)
    {
    }

    public void LogErrorEvent(BuildErrorEventArgs e)
    {
        lock (_gate)
        {
            Errors.Add(e);
            Log.Add($"error {e.Code} {e.File}({e.LineNumber},{e.ColumnNumber}): {e.Message}");
        }
    }

    public void LogWarningEvent(BuildWarningEventArgs e)
    {
        lock (_gate)
        {
            Warnings.Add(e);
            Log.Add($"warning {e.Code} {e.File}({e.LineNumber},{e.ColumnNumber}): {e.Message}");
        }
    }

    public void LogMessageEvent(BuildMessageEventArgs e)
    {
        lock (_gate)
        {
            Messages.Add(e);
            Log.Add($"{e.Importance.ToString().ToLowerInvariant()}: {e.Message}");
        }
    }

    /// <summary>A copy of <see cref="Log"/>, safe while the task still logs on another thread.</summary>
    public List<string> Snapshot()
    {
        lock (_gate)
            return [.. Log];
    }

    public IEnumerable<string> MessagesOf(MessageImportance importance) =>
        Messages.Where(m => m.Importance == importance).Select(m => m.Message ?? "");

    public override string ToString() => string.Join("\n", Log);
}

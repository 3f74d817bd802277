using System.Collections.Immutable;
using System.CommandLine;
using System.Runtime.InteropServices;

namespace Sandbox.Cli;

internal static class Program
{
    public static int Main(string[] args)
    {
        var run = new RunCommand();
        var test = new TestCommand();
        var check = new CheckCommand();
        var root = new RootCommand("Sandbox: run commands, above all `dotnet test`, in rootless Linux sandboxes.")
        {
            run,
            test,
            new ImageCommand(),
            check,
        };

        // `run` and `test` stop parsing their own options at the payload's words (docker's rule), so split first.
        bool wantsHelp = args.Skip(1).TakeWhile(a => a != "--").Any(a => a is "-h" or "--help" or "-?");
        if (args.Length > 0 && args[0] == "run" && !wantsHelp)
        {
            var (own, command) = run.Split(args.Skip(1).ToList());
            ParseResult parse = root.Parse(["run", .. own]);
            if (parse.Errors.Count > 0)
                return parse.Invoke();
            return WithRenderer(run.EventsFormat, run.Stats, parse, renderer =>
            {
                SandboxSpec spec = run.BuildSpec(parse, command);
                string? kept = null;
                int code = ExecuteForResult(spec, renderer, started: e => kept = (e.Root as ImageRoot)?.KeptChanges).ExitCode;
                if (kept is not null)
                    renderer.Note($"the root's changes are kept in {kept}");
                return code;
            });
        }
        if (args.Length > 0 && args[0] == "test" && !wantsHelp)
        {
            var (own, testArgs) = test.Split(args.Skip(1).ToList());
            ParseResult parse = root.Parse(["test", .. own]);
            if (parse.Errors.Count > 0)
                return parse.Invoke();
            return WithRenderer(test.EventsFormat, test.Stats, parse, renderer => test.Run(parse, testArgs, renderer));
        }
        return root.Parse(args).Invoke();
    }

    private static int WithRenderer(Func<ParseResult, string> format, Func<ParseResult, bool> stats, ParseResult parse, Func<IEventRenderer, int> body)
    {
        IEventRenderer renderer;
        try
        {
            renderer = format(parse) == "json" ? new JsonLinesRenderer() : new ConsoleRenderer(stats(parse));
        }
        catch (SandboxException e)
        {
            Console.Error.WriteLine($"sandbox: {e.Message}");
            return e.ExitCode;
        }
        using (renderer)
        {
            try
            {
                return body(renderer);
            }
            catch (SandboxException e)
            {
                renderer.RenderFailure(e);
                return e.ExitCode;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // A file the run needed (the image store, a --keep directory, a bind source) could not
                // be used: say which, with exit 125 as for any sandbox failure, not a stack trace.
                var failure = new SandboxException(SandboxErrorCode.SetupFailed, $"{e.Message} (check the path and its permissions)", e);
                renderer.RenderFailure(failure);
                return failure.ExitCode;
            }
        }
    }

    /// <summary>Runs one sandbox to the end, rendering its events; returns the exit code a CLI should give.</summary>
    public static int Execute(SandboxSpec spec, IEventRenderer renderer, Action<SandboxEvent>? observe = null) =>
        ExecuteForResult(spec, renderer, observe).ExitCode;

    public static (int ExitCode, SandboxResult? Result) ExecuteForResult(SandboxSpec spec, IEventRenderer renderer, Action<SandboxEvent>? observe = null,
        Action<SandboxExecution>? started = null)
    {
        using SandboxExecution execution = SandboxRunner.Start(spec);
        started?.Invoke(execution);
        // Signals to us go to the payload (docker's --sig-proxy): it decides how to end.
        var registrations = new List<PosixSignalRegistration>();
        foreach (int signal in new[] { 1, 2, 3, 10, 12, 15 })
        {
            registrations.Add(PosixSignalRegistration.Create((PosixSignal)signal, context =>
            {
                context.Cancel = true;
                execution.Signal(signal);
            }));
        }
        try
        {
            return Consume(execution, renderer, observe).GetAwaiter().GetResult();
        }
        finally
        {
            foreach (var r in registrations)
                r.Dispose();
        }
    }

    private static async Task<(int, SandboxResult?)> Consume(SandboxExecution execution, IEventRenderer renderer, Action<SandboxEvent>? observe)
    {
        int exitCode = ExitCodes.SandboxFailed;
        SandboxResult? result = null;
        await foreach (SandboxEvent e in execution.Events.ConfigureAwait(false))
        {
            observe?.Invoke(e);
            renderer.Render(e);
            if (e is ExitedEvent exited)
            {
                result = exited.Result;
                exitCode = exited.Result.ExitCode;
            }
        }
        return (exitCode, result);
    }
}

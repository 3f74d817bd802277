using System.Runtime.CompilerServices;

namespace Sandbox;

/// <summary>
/// The bounded queue between a sandbox's supervisor thread and whoever consumes its events, readable
/// both blocking (<see cref="ReadAll"/>: no thread pool at all, what the CLI uses) and asynchronously
/// (<see cref="ReadAllAsync"/>). Bounded: a slow consumer slows the payload down (its pipe fills)
/// instead of filling our memory. A monitor, not a SemaphoreSlim or a Channel: those spin before they
/// block, and a spinning reader takes a CPU from the sandbox it waits for (2-CPU CI runners).
/// </summary>
internal sealed class EventQueue
{
    private readonly Queue<SandboxEvent> _items = new();
    private int _capacity;
    private readonly CancellationToken _abandoned;
    private bool _ended;
    private Exception? _error;
    private TaskCompletionSource? _asyncReader;

    /// <param name="abandoned">When it fires, writers stop waiting for room (nobody will read).</param>
    public EventQueue(int capacity, CancellationToken abandoned)
    {
        _capacity = capacity;
        _abandoned = abandoned;
        abandoned.Register(() =>
        {
            lock (_items)
                Monitor.PulseAll(_items);
        });
    }

    /// <summary>Adds an event, waiting while the queue is full; false when the queue was abandoned.</summary>
    public bool Write(SandboxEvent e)
    {
        TaskCompletionSource? reader;
        lock (_items)
        {
            while (_items.Count >= _capacity && !_abandoned.IsCancellationRequested)
                Monitor.Wait(_items);
            if (_abandoned.IsCancellationRequested)
                return false;
            _items.Enqueue(e);
            reader = Signal();
        }
        reader?.TrySetResult();
        return true;
    }

    /// <summary>Ends the stream; with an error, readers throw it after the events before it.</summary>
    public void Complete(Exception? error = null)
    {
        TaskCompletionSource? reader;
        lock (_items)
        {
            _error = error;
            _ended = true;
            reader = Signal();
        }
        reader?.TrySetResult();
    }

    /// <summary>No limit from now on: for a writer that is also the reader (it would wait for itself).</summary>
    public void RemoveBound()
    {
        lock (_items)
            _capacity = int.MaxValue;
    }

    /// <summary>The next event if one is there, without waiting; never throws the stream's error.</summary>
    public bool TryTake([System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out SandboxEvent? e)
    {
        lock (_items)
        {
            if (_items.Count == 0)
            {
                e = null;
                return false;
            }
            e = _items.Dequeue();
            Monitor.PulseAll(_items);
            return true;
        }
    }

    public IEnumerable<SandboxEvent> ReadAll()
    {
        while (Take(blocking: true, out _) is SandboxEvent e)
            yield return e;
    }

    public async IAsyncEnumerable<SandboxEvent> ReadAllAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        while (true)
        {
            SandboxEvent? e = Take(blocking: false, out Task? wait);
            if (e is not null)
            {
                yield return e;
                continue;
            }
            if (wait is null)
                yield break;
            await wait.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    // Wakes blocked readers and writers; returns the async reader to release outside the lock.
    private TaskCompletionSource? Signal()
    {
        Monitor.PulseAll(_items);
        TaskCompletionSource? reader = _asyncReader;
        _asyncReader = null;
        return reader;
    }

    /// <summary>The next event; null at the end (or, not blocking, with <paramref name="wait"/> to await when none is there yet).</summary>
    private SandboxEvent? Take(bool blocking, out Task? wait)
    {
        wait = null;
        lock (_items)
        {
            while (_items.Count == 0 && !_ended)
            {
                if (!blocking)
                {
                    _asyncReader ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    wait = _asyncReader.Task;
                    return null;
                }
                Monitor.Wait(_items);
            }
            if (_items.Count > 0)
            {
                SandboxEvent e = _items.Dequeue();
                Monitor.PulseAll(_items);
                return e;
            }
        }
        if (_error is not null)
            throw _error;
        return null;
    }
}

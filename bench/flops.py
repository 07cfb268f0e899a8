"""Matrix-product FLOPs per target token of each model the bench trains, forward and backward
(3x the forward products), so that speeds can be read against the machine's peak and against
each other. Element-wise work (gates, softmax, loss) is left out for every model alike.

``s`` is source tokens per target token and ``L`` the source length each target token attends
over (the bench measures both on its batches). Products computed once per sentence (our
context vector's share of the decoder's gates and readout, the bridge) are left out: they are
a few per cent at Multi30k's lengths.
"""

from __future__ import annotations

GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def ours(
    emb: int,
    enc: int,
    hidden: int,
    vocab: int,
    attention: bool,
    s: float = 1.0,
    L: float = 13.0,
    cell: str = "gru",
) -> float:
    """Our model: a bidirectional encoder of ``enc`` per direction; a decoder whose input gates
    read the word (the context's share is per sentence); a readout of width ``emb`` over
    [state; word (; attended)] and an output layer emb x vocab (untied). With Luong's general
    attention: the keys once per source token, then scores and the weighted sum per target
    token."""
    g = GATES[cell]
    encoder = 2 * 2 * g * enc * (emb + enc)
    decoder = 2 * g * hidden * (emb + hidden)
    readout = 2 * (hidden + emb + (2 * enc if attention else 0)) * emb
    attend = 0.0
    if attention:
        attend = s * 2 * (2 * enc) * hidden + 2 * L * hidden + 2 * L * 2 * enc
    output = 2 * emb * vocab
    return 3.0 * (s * encoder + decoder + readout + attend + output)


def opennmt(setup, vocab: int, s: float = 1.0, L: float = 13.0) -> float:
    """OpenNMT-py's RNN: a bidirectional LSTM of ``enc_dir_dim`` per direction, an LSTM decoder
    with input feeding (its input is [word; previous output]), and an output layer hidden x
    vocab. MLP attention as OpenNMT-py 3.0 computes it: the memory's projection again at every
    decoder step, the query's, the scores, the weighted sum and the output layer over
    [context; state]."""
    emb, enc, hidden = setup.emb_dim, setup.enc_dir_dim, setup.hidden_dim
    g = GATES[setup.opennmt_rnn.lower()]
    encoder = 2 * 2 * g * enc * (emb + enc)
    decoder = 2 * g * hidden * (emb + hidden + hidden)  # input feeding
    attend = 0.0
    if setup.attention:
        memory = 2 * enc
        if setup.opennmt_attention == "mlp":
            attend = 2 * L * memory * hidden + 2 * hidden * hidden + 2 * L * hidden
        else:  # general: the query projected once, then scores
            attend = 2 * hidden * memory + 2 * L * memory
        attend += 2 * L * memory + 2 * (memory + hidden) * hidden
    output = 2 * hidden * vocab
    return 3.0 * (s * encoder + decoder + attend + output)


def joeynmt(setup, vocab: int, s: float = 1.0, L: float = 13.0) -> float:
    """JoeyNMT's RNN: a bidirectional GRU encoder, a GRU decoder with input feeding of the
    attentional vector, Bahdanau attention (keys once per source token; the query, scores and
    weighted sum per step), the attentional vector over [context; state], output hidden x
    vocab. It has no decoder without attention."""
    emb, enc, hidden = setup.emb_dim, setup.enc_dir_dim, setup.hidden_dim
    memory = 2 * enc
    encoder = 2 * 2 * 3 * enc * (emb + enc)
    decoder = 2 * 3 * hidden * (emb + hidden + hidden)
    attend = s * 2 * memory * hidden + 2 * hidden * hidden + 2 * L * hidden + 2 * L * memory
    attend += 2 * (memory + hidden) * hidden
    output = 2 * hidden * vocab
    return 3.0 * (s * encoder + decoder + attend + output)

from transformers import AutoModelForCausalLM, AutoTokenizer


def test_tiny_model_round_trips_with_chat_template(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    chat = [{"role": "user", "content": "What is 2 plus 2?"}, {"role": "assistant", "content": "4"}]
    enc = tok.apply_chat_template(chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    assert tok.decode([i for i, m in zip(ids, mask, strict=True) if m]) == "4<|end|>"
    prompt = tok.apply_chat_template(chat[:1], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|assistant|>")
    assert model.config.vocab_size == len(tok)
